"""The summary strip at the top of a tab: what the file is, what is in it, and what to be wary of."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QLabel, QPlainTextEdit, QToolButton, QVBoxLayout, QWidget

from ..core.textsafe import safe_text
from ..core.units import human_bytes
from .loading import LoadedFile
from .theme import plain_tooltip

FORMAT_NAMES = {"torch-zip": "torch.save zip archive", "torch-legacy": "torch.save legacy (pre-1.6) format",
                "torchscript": "TorchScript archive", "safetensors": "safetensors",
                "torch-tar": "torch legacy tar archive"}


def summary_lines(f: LoadedFile) -> dict[str, str]:
    """The texts the strip shows, by line name (also used by tests and the screenshot check)."""
    ck = f.checkpoint
    bits = [FORMAT_NAMES.get(ck.format, ck.format), human_bytes(ck.file_size)]
    meta = ck.meta
    if "version" in meta:
        bits.append(f"archive version {safe_text(meta['version'], 20)}")
    if "format_version" in meta:
        bits.append(f"format version {safe_text(meta['format_version'], 20)}")
    if "protocol_version" in meta:
        bits.append(f"protocol {safe_text(meta['protocol_version'], 20)}")
    if meta.get("byteorder") not in (None, "little"):
        bits.append(f"{safe_text(meta['byteorder'], 10)}-endian")
    if isinstance(meta.get("metadata"), dict) and meta["metadata"]:
        shown = ", ".join(f"{safe_text(k, 30)}={safe_text(v, 40)}" for k, v in list(meta["metadata"].items())[:4])
        bits.append(f"metadata {shown}")
    lines = {"file": f"{safe_text(f.path, 300)}",
             "format": " · ".join(bits)}
    dtypes = ", ".join(f"{name} {count:,}" for name, count in list(f.numel_by_dtype.items())[:6])
    lines["tensors"] = (f"{f.n_tensors:,} tensors, {f.numel:,} elements, {human_bytes(f.nbytes)}"
                        + (f" — {dtypes}" if dtypes else ""))
    lines["roles"] = safe_text(f.analysis.summary, 400)
    prefixes = []
    for sd in f.analysis.state_dicts:
        if sd.prefix:
            where = "/".join(safe_text(p, 40) for p in sd.path) or "root"
            prefixes.append(f"{where}: keys start with '{safe_text(sd.prefix[0], 40)}' ({sd.prefix[1]})")
    if prefixes and not (len(prefixes) == 1 and "keys start with" in lines["roles"]):
        lines["prefixes"] = "; ".join(prefixes[:4])
    if f.unknown_classes:
        n = len(f.unknown_classes)
        shown = ", ".join(safe_text(c, 80) for c in f.unknown_classes[:6])
        more = f", and {n - 6} more" if n > 6 else ""
        lines["stand_ins"] = (f"This file names {n} class{'es' if n != 1 else ''} or function{'s' if n != 1 else ''} "
                              f"that {'were' if n != 1 else 'was'} not imported: {shown}{more}. They are shown as "
                              "inert stand-ins; nothing was run.")
    if f.dangerous:
        lines["dangerous"] = ("DANGEROUS: the pickle names " + ", ".join(
            f"{safe_text(n, 80)} ({safe_text(r, 80)})" for n, r in f.dangerous[:5])
            + ". Nothing was called, but do not load this file with torch.load(weights_only=False).")
    return lines


class SummaryStrip(QFrame):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(8, 6, 8, 6)
        self._lay.setSpacing(2)
        self.labels: dict[str, QLabel] = {}
        self.warnings_box: QPlainTextEdit | None = None

    def _label(self, name: str, text: str, *, bold: bool = False, style: str = "") -> QLabel:
        lab = QLabel(self)
        lab.setTextFormat(Qt.TextFormat.PlainText)
        lab.setText(text)
        lab.setWordWrap(True)
        lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        if bold:
            f = lab.font()
            f.setBold(True)
            lab.setFont(f)
        if style:
            lab.setStyleSheet(style)
        lab.setObjectName(f"summary-{name}")
        self.labels[name] = lab
        self._lay.addWidget(lab)
        return lab

    def set_file(self, f: LoadedFile) -> None:
        lines = summary_lines(f)
        self._label("roles", lines["roles"], bold=True)
        self._label("format", lines["format"])
        self._label("tensors", lines["tensors"])
        if "prefixes" in lines:
            self._label("prefixes", lines["prefixes"])
        if "stand_ins" in lines:
            self._label("stand_ins", lines["stand_ins"],
                        style="background: rgba(168, 50, 143, 0.15); border-radius: 3px; padding: 3px;")
        if "dangerous" in lines:
            self._label("dangerous", lines["dangerous"], bold=True,
                        style="background: rgba(192, 57, 43, 0.25); border-radius: 3px; padding: 3px;")
        if f.warnings:
            button = QToolButton(self)
            button.setText(f"{len(f.warnings)} warning{'s' if len(f.warnings) != 1 else ''} ▸")
            button.setAutoRaise(True)
            button.setCheckable(True)
            box = QPlainTextEdit(self)
            box.setReadOnly(True)
            box.setPlainText("\n".join("• " + safe_text(w, 600) for w in f.warnings))
            box.setMaximumHeight(110)
            box.hide()
            button.toggled.connect(box.setVisible)
            self.warnings_box = box
            self._lay.addWidget(button)
            self._lay.addWidget(box)
        self.setToolTip(plain_tooltip(lines["file"]))
