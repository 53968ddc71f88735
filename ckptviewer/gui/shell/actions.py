"""Every menu action in one table: id, menu, text, shortcut and the window method it calls.

The main window builds its menus from :data:`ACTIONS`; tests trigger actions by id. Shortcuts are
standard keys where Qt has one, so they follow each platform's conventions.
"""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtGui import QKeySequence

SK = QKeySequence.StandardKey


@dataclass(frozen=True)
class ActionSpec:
    id: str
    menu: str
    text: str
    handler: str                          # name of a MainWindow method (dotted: of one of its parts)
    shortcut: QKeySequence.StandardKey | str | None = None
    tip: str = ""
    needs_tab: bool = False               # disabled while no checkpoint tab is open
    separator_before: bool = False


ACTIONS: tuple[ActionSpec, ...] = (
    ActionSpec("file.open", "&File", "&Open…", "open_dialog", SK.Open, "Open one or more checkpoints"),
    ActionSpec("file.open_url", "&File", "Open &URL…", "open_url_dialog", "Ctrl+L",
               "Open a checkpoint by its URL (https://, hf://ORG/REPO/FILE, s3://, gs://); only the bytes needed "
               "are fetched"),
    ActionSpec("file.open_folder", "&File", "Open &Folder…", "open_folder_dialog", "Ctrl+Shift+O",
               "Open a sharded checkpoint's folder (with an *.index.json) or a torch.distributed.checkpoint "
               "folder (with .metadata)"),
    ActionSpec("file.open_run", "&File", "Open R&un…", "runs.open_run_dialog", None,
               "Open a folder of checkpoints as one training run: how each layer moved from checkpoint to "
               "checkpoint (or drop several checkpoints on the window)"),
    ActionSpec("file.demo", "&File", "Open &Demo Checkpoint", "open_demo", None,
               "Write the tutorial's training checkpoint to a temporary folder and open it"),
    ActionSpec("file.compare", "&File", "Co&mpare…", "compare_dialog", None,
               "Compare the current checkpoint (or two files) key by key, in a diff tab", separator_before=True),
    ActionSpec("file.convert", "&File", "Con&vert Files…", "show_convert_panel", None,
               "Show the Convert panel: apply a recipe to the checkpoints you drop on it"),
    ActionSpec("file.merge", "&File", "Mer&ge Checkpoints…", "runs.merge_open_tabs", None,
               "Average checkpoints (the open ones, or files you add) into a new, verified file"),
    ActionSpec("file.close_tab", "&File", "&Close Tab", "close_current_tab", SK.Close, needs_tab=True,
               separator_before=True),
    ActionSpec("file.quit", "&File", "&Quit", "close", SK.Quit, separator_before=True),
    ActionSpec("edit.undo", "&Edit", "&Undo", "edits.undo", SK.Undo, "Undo the current tab's last edit"),
    ActionSpec("edit.redo", "&Edit", "&Redo", "edits.redo", "Ctrl+Shift+Z", "Redo the edit undone last"),
    ActionSpec("edit.copy_path", "&Edit", "Copy &Key Path", "copy_key_path", "Ctrl+Shift+C",
               "Copy the selected entry's key path as Python subscripts", needs_tab=True),
    ActionSpec("edit.copy_snippet", "&Edit", "Copy Load &Snippet", "copy_snippet", "Ctrl+Shift+S",
               "Copy Python code that loads the selected entry safely", needs_tab=True),
    ActionSpec("edit.find", "&Edit", "&Find…", "focus_search", SK.Find, "Filter the tree by key", needs_tab=True,
               separator_before=True),
    ActionSpec("checkpoint.remap", "&Checkpoint", "Remap &Devices…", "edits.remap_devices", None,
               "Write the tensors as recorded on other devices (like map_location)", needs_tab=True),
    ActionSpec("checkpoint.rename", "&Checkpoint", "&Rename Keys…", "edits.rename_keys", "F2",
               "Rename state_dict keys with prefix, replace, regex and mapping rules", needs_tab=True),
    ActionSpec("checkpoint.strip", "&Checkpoint", "&Strip Prefix…", "edits.strip_prefix", None,
               "Remove a prefix every key shares (module., _orig_mod., ...)", needs_tab=True),
    ActionSpec("checkpoint.warm_start", "&Checkpoint", "&Warm Start Check…", "edits.warm_start", None,
               "Check which keys would load into another checkpoint's model, and rename to match more",
               needs_tab=True, separator_before=True),
    ActionSpec("checkpoint.export", "&Checkpoint", "&Export…", "edits.export", SK.Save,
               "Write the edited checkpoint (or a part of it) to a new file", needs_tab=True,
               separator_before=True),
    ActionSpec("checkpoint.export_values", "&Checkpoint", "Export &Values…", "export_values", None,
               "Write the selected tensor's values to a .npy or .csv file", needs_tab=True),
    ActionSpec("checkpoint.health", "&Checkpoint", "Check &Health", "check_health", "Ctrl+Shift+H",
               "Read every tensor once: NaN/Inf, zeroed or constant weights, dead rows, duplicates, outliers",
               needs_tab=True, separator_before=True),
    ActionSpec("checkpoint.verify", "&Checkpoint", "&Verify Integrity", "verify_integrity", None,
               "Read every member of the file once and check its CRC-32 (zip-based files)", needs_tab=True),
    ActionSpec("view.expand_all", "&View", "&Expand All", "expand_all", "Ctrl+E", needs_tab=True),
    ActionSpec("view.collapse_all", "&View", "&Collapse All", "collapse_all", "Ctrl+Shift+E", needs_tab=True),
    ActionSpec("view.values", "&View", "&Values of Selection", "show_values", "Ctrl+Shift+V",
               "Show the selected tensor's values: a heatmap, plot or number, and a table", needs_tab=True),
    ActionSpec("view.cancel", "&View", "Cancel &Running Work", "cancel_work", "Ctrl+.", needs_tab=True,
               separator_before=True),
    ActionSpec("help.about", "&Help", "&About ckptviewer", "show_about"),
)

MENUS = ("&File", "&Edit", "&Checkpoint", "&View", "&Help")
