"""The diff tab: two checkpoints compared key by key, with its tree, charts and background work."""
