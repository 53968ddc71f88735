"""One module per single-file container: torch zip (and its archive parser), torch legacy, torch tar,
safetensors. Each turns a buffer into a ``Checkpoint``; none chooses among the others (``read.detect`` does)."""
