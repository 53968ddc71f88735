"""File > Open URL…: a checkpoint's URL (``https://``, ``hf://ORG/REPO[@REVISION]/FILE``, ``s3://``, ``gs://``),
checked as it is typed; opening itself happens in the tab's worker like any file."""
from __future__ import annotations

from PySide6.QtWidgets import QLineEdit, QWidget

from ...core.source.remote import url_problem
from ...core.util.locations import normalize_location
from .common import StepDialog, plain_label

EXAMPLES = ("Examples:\n"
            "  hf://ORG/REPO/model.safetensors   (a file on the Hugging Face Hub)\n"
            "  hf://ORG/REPO@REVISION/FILE   (at a branch, tag or commit)\n"
            "  hf://ORG/REPO   (the repository's checkpoint or shard index)\n"
            "  https://example.org/checkpoints/model.pt\n"
            "  s3://bucket/run1/model.pt   gs://bucket/run1/model.pt\n"
            "Only the bytes needed are fetched, and they are kept in a cache. Credentials: HF_TOKEN or "
            "`hf auth login` for the Hub, the usual AWS/Google credentials for buckets, USER:PASSWORD@ in an "
            "https URL (never shown or saved).")


class OpenUrlState:
    """The text typed and what it means."""

    def __init__(self, text: str = ""):
        self.text = text

    @property
    def problem(self) -> str | None:
        return url_problem(self.text)

    @property
    def location(self) -> str | None:
        return None if self.problem else normalize_location(self.text)


class OpenUrlDialog(StepDialog):
    def __init__(self, parent: QWidget | None, initial: str = ""):
        super().__init__(parent, "Open URL")
        self.state = OpenUrlState(initial)
        self.body.addWidget(plain_label("URL of a checkpoint, a shard index or a Hub repository:", self))
        self.edit = QLineEdit(self)
        self.edit.setPlaceholderText("hf://ORG/REPO/model.safetensors")
        self.edit.setText(initial)
        self.edit.setMinimumWidth(560)
        self.edit.textChanged.connect(self._on_text_changed)
        self.body.addWidget(self.edit)
        self.body.addWidget(plain_label(EXAMPLES, self))
        self.finish_layout()
        self._on_text_changed(initial)

    def _on_text_changed(self, text: str) -> None:
        self.state.text = text
        problem = self.state.problem
        # An empty field is not an error yet; anything else that cannot be opened says why.
        self.set_error(problem if problem and text.strip() else "")
        self.set_ok(problem is None, "Open")

    @classmethod
    def ask(cls, parent: QWidget | None, initial: str = "") -> str | None:
        dialog = cls(parent, initial)
        return dialog.state.location if dialog.run() else None
