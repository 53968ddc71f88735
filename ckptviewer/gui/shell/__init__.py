"""The application shell: startup, the main window (composition only), its actions table, the edit
controller, single-instance hand-off, About, screenshots."""
