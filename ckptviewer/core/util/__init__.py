"""Plain helpers every layer may use: the error family, progress records, lazy numpy, units, safe text."""
