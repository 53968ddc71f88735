"""Edits as data: operations (select, drop, strip prefix, rename, remap, cast), documents with undo,
recipes and batches. Edits hand their result to ``write``."""
