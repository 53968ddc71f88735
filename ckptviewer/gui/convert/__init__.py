"""The Convert panel: a recipe editor, a drop zone and one row per file converting in workers."""
