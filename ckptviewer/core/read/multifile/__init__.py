"""Checkpoints made of several files: sharded ``*.index.json`` sets and torch.distributed.checkpoint folders."""
