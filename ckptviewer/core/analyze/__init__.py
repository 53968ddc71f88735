"""Questions about checkpoints, answered without writing: statistics and histograms, the info report,
load snippets, the safety scan, diffs and the warm-start check. An analysis may apply ``edit`` operations
(a diff strips prefixes first); nothing below imports from here. A new analysis goes here."""
