"""The summary strip at the top of a tab: what the file is, what is in it, and what to be wary of."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ...core.model.interpret import Analysis
from ...core.util.textsafe import safe_text
from ...core.util.units import counted, human_bytes
from ..panels.safety_report import CLEAN, INCOMPLETE, SafetyReport
from ..widgets.theme import plain_tooltip
from .loading import LoadedFile

FORMAT_NAMES = {"torch-zip": "torch.save zip archive", "torch-legacy": "torch.save legacy (pre-1.6) format",
                "torchscript": "TorchScript archive", "safetensors": "safetensors",
                "torch-tar": "torch legacy tar archive", "torch-dcp": "torch.distributed.checkpoint folder"}


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
    if f.missing is not None:        # said first, apart from safety: the numbers below describe absent bytes
        head = f.missing.headline()
        lines["missing"] = f"{head[:1].upper()}{head[1:]}. {f.missing.advice()}"
    dtypes = ", ".join(f"{name} {count:,}" for name, count in list(f.numel_by_dtype.items())[:6])
    lines["tensors"] = (f"{counted(f.n_tensors, 'tensor')}, {counted(f.numel, 'element')}, {human_bytes(f.nbytes)}"
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
    # Dangerous globals are the safety banner's (safety.py), above this strip.
    return lines


def strip_offers(analysis: Analysis) -> list[tuple[tuple, str, str]]:
    """(state_dict path, prefix, label) for each state_dict whose keys all start with a wrapper prefix."""
    return [(tuple(sd.path), sd.prefix[0], sd.prefix[1]) for sd in analysis.state_dicts
            if sd.prefix and sd.kind == "state_dict"][:MAX_STRIP_OFFERS]


MAX_STRIP_OFFERS = 4
SAFETY_TINTS = {CLEAN: "rgba(31, 138, 76, 0.16)", INCOMPLETE: "rgba(214, 140, 30, 0.22)"}
# Missing bytes: a warning of its own (not the safety verdict's green or orange), above everything else.
MISSING_STYLE = "background: rgba(217, 83, 79, 0.20); border: 1px solid rgba(217, 83, 79, 0.6); " \
                "border-radius: 3px; padding: 4px;"
BANNER_STYLE = "#strip-banner { background: rgba(52, 152, 219, 0.14); border-radius: 3px; }"
EDITS_STYLE = "background: rgba(230, 126, 34, 0.16); border-radius: 3px; padding: 3px;"


class SummaryStrip(QFrame):
    """``strip_requested(prefix, state_dict path)`` when the banner's Strip button is clicked."""

    strip_requested = Signal(str, object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(8, 6, 8, 6)
        self._lay.setSpacing(2)
        self.labels: dict[str, QLabel] = {}
        self.warnings_box: QPlainTextEdit | None = None
        self.strip_banner: QFrame | None = None
        self.strip_buttons: list[QPushButton] = []
        self._banner_index = 0
        self._offers: list[tuple[tuple, str, str]] = []

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
        if "missing" in lines:
            self._label("missing", "⚠ " + lines["missing"], bold=True, style=MISSING_STYLE)
        self._label("roles", lines["roles"], bold=True)
        self._label("format", lines["format"])
        self._label("tensors", lines["tensors"])
        self._label("safety", "").hide()
        self._banner_index = self._lay.count()
        self._set_strip_banner(f.analysis)
        self._label("edits", "", style=EDITS_STYLE).hide()
        if "stand_ins" in lines:
            self._label("stand_ins", lines["stand_ins"],
                        style="background: rgba(168, 50, 143, 0.15); border-radius: 3px; padding: 3px;")
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

    def set_safety(self, report: SafetyReport) -> None:
        """A short verdict line for a clean or incompletely scanned file (a dangerous one has the banner
        above, a file with stand-ins the stand-ins line)."""
        lab = self.labels["safety"]
        tint = SAFETY_TINTS.get(report.level)
        if tint is None:
            lab.hide()
            return
        word, _, rest = report.verdict.partition(": ")
        lab.setText(f"Safety: {word.lower()} — {rest}" if rest else f"Safety: {report.verdict}")
        lab.setStyleSheet(f"background: {tint}; border-radius: 3px; padding: 3px;")
        lab.setToolTip(plain_tooltip(report.full_verdict))
        lab.show()

    # -- edits ----------------------------------------------------------------------------------
    def _set_strip_banner(self, analysis: Analysis) -> None:
        """One row per state_dict whose keys start with a wrapper prefix, each with a Strip button."""
        offers = strip_offers(analysis)
        if self.strip_banner is not None and offers == self._offers:
            return
        self._offers = offers
        if self.strip_banner is not None:
            self._lay.removeWidget(self.strip_banner)
            self.strip_banner.hide()
            self.strip_banner.deleteLater()
            self.strip_banner = None
        self.strip_buttons = []
        self.labels.pop("prefixes", None)
        if not offers:
            return
        banner = QFrame(self)
        banner.setObjectName("strip-banner")
        banner.setStyleSheet(BANNER_STYLE)
        lay = QVBoxLayout(banner)
        lay.setContentsMargins(6, 3, 6, 3)
        lay.setSpacing(2)
        texts = []
        for path, prefix, label in offers:
            row = QHBoxLayout()
            where = "/".join(safe_text(p, 40) for p in path) or "The file"
            text = f"{where}: keys start with '{safe_text(prefix, 40)}' ({safe_text(label, 80)})"
            texts.append(text)
            lab = QLabel(banner)
            lab.setTextFormat(Qt.TextFormat.PlainText)
            lab.setText(text)
            lab.setWordWrap(True)
            button = QPushButton(f"Strip '{safe_text(prefix, 40)}'", banner)
            button.setObjectName("strip-banner-button")
            button.setToolTip(plain_tooltip(f"Remove '{safe_text(prefix, 40)}' from every key of this state_dict "
                                            "(an edit you can undo; the file is not changed)"))
            button.clicked.connect(lambda _checked=False, p=prefix, sd=path: self.strip_requested.emit(p, sd))
            row.addWidget(lab, 1)
            row.addWidget(button)
            lay.addLayout(row)
            self.strip_buttons.append(button)
            if "prefixes" not in self.labels:
                self.labels["prefixes"] = lab
        self.strip_banner = banner
        self._lay.insertWidget(self._banner_index, banner)

    def set_edit_state(self, analysis: Analysis, steps: list, unexported: bool) -> None:
        """Describe the edited view: what the edited tree holds, its steps, and the strip banner."""
        self.labels["roles"].setText(safe_text(analysis.summary, 400))
        self._set_strip_banner(analysis)
        edits = self.labels["edits"]
        if not steps:
            edits.hide()
            edits.setText("")
            return
        shown = " · ".join(safe_text(s.describe(), 100) for s in steps[-6:])
        more = f"{len(steps) - 6} earlier steps · " if len(steps) > 6 else ""
        state = ("not exported yet; the file on disk is unchanged" if unexported
                 else "exported; the file on disk is unchanged")
        edits.setText(f"Edited view ({len(steps)} step{'s' if len(steps) != 1 else ''}, {state}): {more}{shown}")
        edits.show()
