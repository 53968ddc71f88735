"""What is inside a checkpoint: inert objects, tensor and storage handles, dtypes, the object graph walk,
key paths, the interpretation (state_dicts, optimizers, modules) and the display tree. Built by ``read``,
used by everything above it; imports nothing above ``source``."""
