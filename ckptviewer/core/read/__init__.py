"""Reading files, a straight way down: ``open`` (path: file, index or folder) -> ``detect`` (one file's
format from its first bytes) -> ``formats`` (one container each) -> ``pickle`` (the safe unpickler and its
reconstructors) -> tensor handles in a ``model.Checkpoint``. ``multifile`` holds the formats made of
several files (sharded indexes, torch.distributed.checkpoint folders). A new format goes in ``formats``."""
