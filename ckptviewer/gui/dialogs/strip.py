"""Strip Prefix: the prefixes every key of a state_dict shares (``module.`` from DataParallel/DDP,
``_orig_mod.`` from torch.compile, or a shared first part), offered for stripping with a preview."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QWidget

from ...core.edit.ops import RenameRow, StripPrefix, find_state_dicts, rename_preview
from ...core.model.interpret import detect_prefix
from ...core.util.textsafe import safe_text
from .common import RenamePreviewModel, StepDialog, at_text, plain_label, preview_table, where_text


@dataclass
class PrefixOffer:
    prefix: str
    why: str              # "DataParallel/DistributedDataParallel", "shared by every key"


@dataclass
class StripPreview:
    rows: list[tuple[tuple, RenameRow]]
    lines: list[str]
    having: int
    collisions: int


class StripState:
    def __init__(self, targets: list[tuple[tuple, list]], prefix: str = "", scope: int | None = None):
        self.targets = targets
        self.scope: int | None = scope if scope is not None else (None if len(targets) != 1 else 0)
        self.prefix = prefix
        if not prefix:
            offers = self.offers()
            self.prefix = offers[0].prefix if offers else ""

    @classmethod
    def for_root(cls, root: Any, prefix: str = "", at: tuple | None = None) -> "StripState":
        targets = [(path, [k for k in sd]) for path, sd in find_state_dicts(root)]
        scope = next((i for i, (p, _) in enumerate(targets) if p == at), None) if at is not None else None
        return cls(targets, prefix, scope)

    def chosen(self) -> list[tuple[tuple, list]]:
        return self.targets if self.scope is None else [self.targets[self.scope]]

    def offers(self) -> list[PrefixOffer]:
        """Detected prefixes of the chosen state_dicts, wrapper prefixes first."""
        out: dict[str, PrefixOffer] = {}
        shared: dict[str, PrefixOffer] = {}
        for path, keys in self.chosen():
            wrapper, common = detect_prefix([k for k in keys if isinstance(k, str)])
            if wrapper is not None and wrapper[0] not in out:
                out[wrapper[0]] = PrefixOffer(wrapper[0], wrapper[1])
            if common is not None and common not in shared:
                shared[common] = PrefixOffer(common, f"shared by every key of {where_text(path)}")
        for p, offer in shared.items():
            out.setdefault(p, offer)
        return list(out.values())

    def preview(self) -> StripPreview:
        rows: list[tuple[tuple, RenameRow]] = []
        lines = []
        having = collisions = 0
        if not self.prefix:
            return StripPreview([], ["Choose or type a prefix."], 0, 0)
        for path, keys in self.chosen():
            preview = rename_preview(keys, (("remove_prefix", self.prefix),))
            n = sum(r.changed for r in preview)
            c = sum(r.collision for r in preview)
            left = len(keys) - n
            having += n
            collisions += c
            rows.extend((path, r) for r in preview)
            line = f"{where_text(path)}: {n:,} of {len(keys):,} keys start with '{safe_text(self.prefix, 60)}'"
            if n and left:
                line += f"; {left:,} without it stay as they are"
            if c:
                line += f"; {c:,} keys would collide"
            lines.append(line)
        return StripPreview(rows, lines, having, collisions)

    def step(self) -> StripPrefix | None:
        p = self.preview()
        if not self.prefix or not p.having or p.collisions:
            return None
        at = None if self.scope is None else at_text(self.targets[self.scope][0])
        return StripPrefix(self.prefix, at)


class StripPrefixDialog(StepDialog):
    def __init__(self, parent: QWidget | None, root: Any, prefix: str = "", at: tuple | None = None):
        super().__init__(parent, "Strip Prefix")
        self.state = StripState.for_root(root, prefix, at)
        form = QFormLayout()
        self.scope_combo = QComboBox(self)
        if len(self.state.targets) != 1:
            self.scope_combo.addItem(f"all {len(self.state.targets)} state_dicts")
        for path, keys in self.state.targets:
            self.scope_combo.addItem(f"{where_text(path)} ({len(keys):,} keys)")
        if self.state.scope is not None and len(self.state.targets) != 1:
            self.scope_combo.setCurrentIndex(self.state.scope + 1)
        self.scope_combo.currentIndexChanged.connect(self._on_scope_changed)
        form.addRow("State dict:", self.scope_combo)
        self.prefix_combo = QComboBox(self)
        self.prefix_combo.setEditable(True)
        self.prefix_combo.setObjectName("strip-prefix")
        self._fill_offers()
        self.prefix_combo.currentTextChanged.connect(self._on_prefix_changed)
        form.addRow("Prefix:", self.prefix_combo)
        self.body.addLayout(form)
        self.offer_label = plain_label("", self)
        self.body.addWidget(self.offer_label)
        self.lines_label = plain_label("", self)
        self.body.addWidget(self.lines_label)
        head = QHBoxLayout()
        head.addStretch(1)
        self.only_changed = QCheckBox("Only renamed keys", self)
        self.only_changed.setChecked(True)
        self.only_changed.toggled.connect(lambda _on: self._refresh())
        head.addWidget(self.only_changed)
        self.body.addLayout(head)
        self.preview_model = RenamePreviewModel(self)
        self.preview_view = preview_table(self.preview_model, self)
        self.body.addWidget(self.preview_view, 1)
        self.finish_layout()
        self.resize(760, 480)
        self._refresh()

    def _fill_offers(self) -> None:
        self.prefix_combo.blockSignals(True)
        self.prefix_combo.clear()
        offers = self.state.offers()
        for o in offers:
            self.prefix_combo.addItem(o.prefix)
        self.prefix_combo.setCurrentText(self.state.prefix)
        self.prefix_combo.blockSignals(False)
        self.offers = offers

    def _on_scope_changed(self, index: int) -> None:
        if len(self.state.targets) != 1:
            self.state.scope = None if index == 0 else index - 1
        self._fill_offers()
        self._refresh()

    def _on_prefix_changed(self, text: str) -> None:
        self.state.prefix = text
        self._refresh()

    def _refresh(self) -> None:
        offer = next((o for o in self.offers if o.prefix == self.state.prefix), None)
        if offer is not None:
            self.offer_label.setText(f"Detected: '{safe_text(offer.prefix, 60)}' ({safe_text(offer.why, 120)})")
        elif self.offers:
            self.offer_label.setText("Detected: " + ", ".join(f"'{safe_text(o.prefix, 40)}'" for o in self.offers))
        else:
            self.offer_label.setText("No prefix is shared by every key; type the one to strip.")
        p = self.state.preview()
        self.lines_label.setText("\n".join(p.lines))
        rows = p.rows
        if self.only_changed.isChecked():
            rows = [(path, r) for path, r in rows if r.changed or r.collision]
        self.preview_model.set_rows(rows, multi=len(self.state.chosen()) > 1)
        self.preview_view.horizontalHeader().resizeSection(0, 300)
        if p.collisions:
            self.set_error("Stripping would give two keys the same name (highlighted); nothing would be changed.")
        elif self.state.prefix and not p.having:
            self.set_error(f"No key starts with '{safe_text(self.state.prefix, 60)}'.")
        else:
            self.set_error("")
        self.set_ok(bool(self.state.prefix) and p.having > 0 and not p.collisions)   # as state.step() decides

    def step(self) -> StripPrefix | None:
        return self.state.step()

    @classmethod
    def ask(cls, parent: QWidget | None, root: Any, prefix: str = "", at: tuple | None = None) -> StripPrefix | None:
        dlg = cls(parent, root, prefix, at)
        try:
            return dlg.step() if dlg.run() else None
        finally:
            dlg.deleteLater()
