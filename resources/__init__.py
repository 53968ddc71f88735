"""Data files of ckptviewer (icons, the .desktop entry, the MIME types): read with importlib.resources."""
