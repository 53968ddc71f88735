"""Remap Devices: each device the file records, mapped to a target, like ``torch.load(map_location=...)``."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from ...core.edit.ops import RemapDevice, device_matches
from ...core.util.errors import OperationError
from ...core.util.textsafe import safe_text
from .common import StepDialog, plain_label

COMMON_TARGETS = ("cpu", "cuda", "cuda:0", "cuda:1", "mps")


@dataclass
class RemapState:
    """``devices``: recorded device -> distinct tensors; ``targets``: device -> where it goes (absent or
    the same device: unchanged)."""

    devices: dict[str, int]
    targets: dict[str, str] = field(default_factory=dict)

    def target(self, device: str) -> str:
        return self.targets.get(device, device) or device

    def set_target(self, device: str, target: str) -> None:
        self.targets[device] = target.strip()

    def all_to_cpu(self) -> None:
        for d in self.devices:
            self.targets[d] = "cpu"

    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The step's rules. Exact devices (``cuda:1``) come before bare ones (``cuda``), which match
        every index; a device left as it is that a bare rule would catch gets a rule of its own."""
        moves = [(d, self.target(d)) for d in self.devices if self.target(d) != d]
        exact = [p for p in moves if ":" in p[0]]
        bare = [p for p in moves if ":" not in p[0]]
        keep = [(d, d) for d in self.devices if self.target(d) == d
                and any(device_matches(src, d) for src, _ in bare)]
        return tuple(keep + exact + bare)

    def error(self) -> str:
        try:
            RemapDevice(self.pairs())
        except OperationError as e:
            return str(e)
        return ""

    def step(self) -> RemapDevice | None:
        pairs = self.pairs()
        if not pairs or self.error() or all(a == b for a, b in pairs):
            return None
        return RemapDevice(pairs)

    def summary(self) -> list[str]:
        lines = []
        for d, n in self.devices.items():
            t = self.target(d)
            if t != d:
                lines.append(f"{n:,} tensor{'s' if n != 1 else ''} recorded on {d} → {t}")
        return lines


def _targets_for(devices: dict[str, int]) -> list[str]:
    out = list(COMMON_TARGETS)
    for d in devices:
        m = re.fullmatch(r"(\w+):(\d+)", d)
        if m and d not in out:
            out.append(d)
    return out


class RemapDevicesDialog(StepDialog):
    def __init__(self, parent: QWidget | None, devices: dict[str, int]):
        super().__init__(parent, "Remap Devices")
        self.state = RemapState(dict(devices))
        self.combos: dict[str, QComboBox] = {}
        intro = plain_label("Where each device recorded in the file should point in the written copy (like "
                            "torch.load's map_location). Model and optimizer tensors alike; no values change.", self)
        self.body.addWidget(intro)
        self.table = QTableWidget(len(devices), 3, self)
        self.table.setHorizontalHeaderLabels(["Recorded device", "Tensors", "Write as"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        targets = _targets_for(devices)
        for row, (device, count) in enumerate(devices.items()):
            self.table.setItem(row, 0, QTableWidgetItem(safe_text(device, 60)))
            item = QTableWidgetItem(f"{count:,}")
            item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, 1, item)
            combo = QComboBox(self.table)
            combo.setEditable(True)
            combo.addItem(device)
            for t in targets:
                if t != device:
                    combo.addItem(t)
            combo.setCurrentText(device)
            combo.setToolTip("A device such as cpu, cuda, cuda:0 (the recorded one: unchanged)")
            combo.currentTextChanged.connect(lambda text, d=device: self._on_target_changed(d, text))
            self.table.setCellWidget(row, 2, combo)
            self.combos[device] = combo
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumWidth(460)
        self.table.setMaximumHeight(60 + 32 * max(len(devices), 1))
        self.body.addWidget(self.table)
        row = QHBoxLayout()
        self.cpu_button = QPushButton("Everything to CPU", self)
        self.cpu_button.setToolTip("Write every tensor as recorded on the CPU (loads anywhere without map_location)")
        self.cpu_button.clicked.connect(self._on_all_to_cpu)
        row.addWidget(self.cpu_button)
        row.addStretch(1)
        self.body.addLayout(row)
        self.summary_label = plain_label("", self)
        self.body.addWidget(self.summary_label)
        if not devices:
            self.summary_label.setText("The file records no tensors.")
        self.finish_layout()
        self._refresh()

    def _on_target_changed(self, device: str, text: str) -> None:
        self.state.set_target(device, text)
        self._refresh()

    def _on_all_to_cpu(self) -> None:
        self.state.all_to_cpu()
        for device, combo in self.combos.items():
            combo.blockSignals(True)
            combo.setCurrentText("cpu")
            combo.blockSignals(False)
        self._refresh()

    def _refresh(self) -> None:
        err = self.state.error()
        self.set_error(err)
        lines = self.state.summary()
        if self.state.devices:
            self.summary_label.setText("\n".join(lines) if lines else "Nothing moves yet: choose a target.")
        self.set_ok(self.state.step() is not None)

    def step(self) -> RemapDevice | None:
        return self.state.step()

    @classmethod
    def ask(cls, parent: QWidget | None, devices: dict[str, int]) -> RemapDevice | None:
        dlg = cls(parent, devices)
        try:
            return dlg.step() if dlg.run() else None
        finally:
            dlg.deleteLater()
