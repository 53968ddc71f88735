"""The safe unpickler: an interpreter that never imports or calls what a pickle names, the allowlist of
our own reconstructors, the list of dangerous globals, and the glue that turns storage ids into handles."""
