"""The checkpoint tab: loading a file off the GUI thread, its tree model and search, the summary strip,
and its edits (the edited view, undo, export)."""
