"""Where bytes come from: local files (memory-mapped) and the byte-range sources tensor handles read through."""
