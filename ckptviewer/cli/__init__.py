"""The headless command line and the window's launcher (see ``main``)."""
