"""The details panel: everything known about the selected node, plus its statistics when computed.

It is rebuilt for each selection from the core node (metadata only; nothing here reads tensor bytes).
Statistics arrive later from a worker through :meth:`DetailsPanel.set_stats`, and the values of a small
tensor (a counter, a 0-d loss) through :meth:`DetailsPanel.set_value` when the tree has not read them yet;
a single-element tensor shows its value and no statistics. File-provided text is
shown through ``safe_text`` in plain-text widgets only.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import shiboken6
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QFrame,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.analyze.stats import TensorStats
from ...core.model.interpret import OptimizerInfo, StateDictInfo, program_facts
from ...core.model.sparse import special_facts
from ...core.model.tensor import TensorRef
from ...core.model.tree import CONTAINER_KINDS, Node
from ...core.model.values import is_small
from ...core.model.values import value_text as small_value_text
from ...core.util.progress import Progress
from ...core.util.textsafe import key_text, path_text, safe_text
from ...core.util.units import human_bytes, shape_text
from ..widgets.theme import kind_label, plain_label

_label = partial(plain_label, select=True)   # labels here can be selected and copied

def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.6g}"
    return safe_text(v, 80)


class DetailsPanel(QScrollArea):
    """``navigate_requested(node)`` when the user clicks through to another node (parameter <-> state)."""

    navigate_requested = Signal(object)
    stats_requested = Signal()

    STAT_ROWS = (("min", "Min"), ("max", "Max"), ("mean", "Mean"), ("std", "Std"), ("l2", "L2 norm"),
                 ("zeros", "Zeros"), ("nan", "NaN"), ("inf", "Inf"))

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self._node: Node | None = None
        self._resolver: Callable[[Node, str], Node | None] | None = None
        self._shared: Callable[[TensorRef], list[tuple]] | None = None
        self._note: Callable[[Node], str] | None = None
        self.stat_labels: dict[str, QLabel] = {}
        self.stats_status: QLabel | None = None
        self.value_label: QLabel | None = None
        self.facts: dict[str, str] = {}
        self._body = QWidget()
        self.setWidget(self._body)
        self._lay = QVBoxLayout(self._body)
        self._lay.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.show_message("Select an entry in the tree to see its details.")

    def set_helpers(self, resolve_parameter: Callable[[Node, str], Node | None],
                    shared_with: Callable[[TensorRef], list[tuple]]) -> None:
        self._resolver = resolve_parameter
        self._shared = shared_with

    def set_note_provider(self, note: Callable[[Node], str]) -> None:
        """``note(node)``: what the tab's edits changed at a node, shown under its title."""
        self._note = note

    @property
    def node(self) -> Node | None:
        return self._node

    # -- building -------------------------------------------------------------------------------
    def _reset(self) -> None:
        body = QWidget()
        self._lay = QVBoxLayout(body)
        self._lay.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.setWidget(body)           # deletes the old body and everything in it
        self._body = body
        self.stat_labels = {}
        self.stats_status = None
        self.value_label = None
        self.facts = {}

    def show_message(self, text: str) -> None:
        self._node = None
        self._reset()
        lab = _label(text, self._body, select=False)
        lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._lay.addWidget(lab)

    def _heading(self, text: str) -> None:
        lab = _label(text, self._body, select=False)
        f = lab.font()
        f.setBold(True)
        lab.setFont(f)
        self._lay.addWidget(lab)

    def _form(self, rows: list[tuple[str, str]]) -> QFormLayout:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft)
        for name, value in rows:
            self.facts[name] = value
            form.addRow(_label(name + ":", self._body, wrap=False, select=False), _label(value, self._body))
        self._lay.addLayout(form)
        return form

    def show_node(self, node: Node) -> None:
        self._reset()
        self._node = node
        title = _label(path_text(node.path) if node.path else node.name, self._body)
        f = title.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.1)
        title.setFont(f)
        self._lay.addWidget(title)
        label = kind_label(node.kind)
        sub = label if node.type_text == node.kind else f"{safe_text(node.type_text, 120)} — {label}"
        if node.note:
            sub += f" ({safe_text(node.note, 200)})"
        self._lay.addWidget(_label(sub, self._body))
        edited = self._note(node) if self._note is not None else ""
        if edited:
            self.facts["Edited"] = edited
            lab = _label(f"Edited: {edited}", self._body)
            lab.setObjectName("details-edited")
            lab.setStyleSheet("background: rgba(230, 126, 34, 0.16); border-radius: 3px; padding: 2px;")
            self._lay.addWidget(lab)
        if node.kind == "tensor":
            self._tensor(node)
        elif node.kind == "optimizer" and isinstance(node.info, OptimizerInfo):
            self._totals(node)
            self._optimizer(node, node.info)
        elif node.kind == "param_state":
            self._param_state(node)
        elif node.kind in CONTAINER_KINDS:
            self._totals(node)
        else:
            self._value(node)

    def _tensor(self, node: Node) -> None:
        t: TensorRef = node.value
        rows = [
            ("Shape", shape_text(t.shape)),
            ("DType", t.dtype.name),
            ("Elements", f"{t.numel:,}"),
            ("Bytes", f"{t.nbytes:,} ({human_bytes(t.nbytes)})"),
            ("Stride", shape_text(t.stride) + ("  (contiguous)" if t.is_contiguous else "  (not contiguous)")
             + ("  (stride 0: repeated values)" if t.has_zero_stride else "")),
            ("Storage offset", f"{t.offset:,}"),
            ("Saved device", safe_text(t.device, 60)),
            ("Kind", t.kind + ("  requires_grad" if t.requires_grad else "")
             + (f"  subclass {safe_text(t.subclass, 80)}" if t.subclass else "")),
        ]
        if t.storage is not None:
            rows.append(("Storage", f"{safe_text(t.storage.key, 60)}  ({human_bytes(t.storage.nbytes)})"))
            others = [p for p in (self._shared(t) if self._shared else []) if tuple(p) != tuple(node.path)]
            if others:
                shown = ", ".join(path_text(p) for p in others[:4])
                more = f" and {len(others) - 4} more" if len(others) > 4 else ""
                rows.append(("Shared storage", f"same storage as {shown}{more}"))
        for label, text in special_facts(t):
            rows.append((label, safe_text(text, 400)))
        if t.problem:
            rows.append(("Problem", safe_text(t.problem, 300)))
        small = is_small(t) and not t.problem
        if small:
            # A counter (num_batches_tracked, an optimizer's step) or a 0-d loss is read as its value.
            known, value = node.small_value()
            rows.insert(0, ("Value", self._value_text(value) if known else "reading…"))
        form = self._form(rows)
        self.integrity_label = _label("", self._body)
        self.integrity_label.setObjectName("details-integrity")
        self.integrity_label.setStyleSheet("background: rgba(217, 83, 79, 0.18); border-radius: 3px; padding: 2px;")
        self.integrity_label.hide()
        self._lay.addWidget(self.integrity_label)
        self.set_integrity(t.integrity_error)
        if small:
            self.value_label = form.itemAt(0, QFormLayout.ItemRole.FieldRole).widget()
            if t.numel == 1:
                return                      # one value: no min/max/mean, no one-bin histogram
        self._heading("Statistics")
        self.stats_status = _label("Waiting…" if t.readable else "Values cannot be read.", self._body,
                                        select=False)
        self._lay.addWidget(self.stats_status)
        form = QFormLayout()
        for key, label in self.STAT_ROWS:
            lab = _label("–", self._body)
            self.stat_labels[key] = lab
            form.addRow(_label(label + ":", self._body, wrap=False, select=False), lab)
        self._lay.addLayout(form)

    def set_integrity(self, error: str | None) -> None:
        """Show (or hide) that the tensor's bytes fail their CRC-32 check; known once they were read."""
        label = getattr(self, "integrity_label", None)
        if label is None or not shiboken6.isValid(label):
            return
        if error:
            self.facts["Integrity"] = error
            label.setText(f"Integrity: {safe_text(error, 400)}")
            label.show()
        else:
            label.hide()

    @staticmethod
    def _value_text(value: Any) -> str:
        return safe_text(small_value_text(value), 400) if value is not None else "cannot be read"

    def set_value(self, value: Any) -> None:
        """The small tensor's values, read by a worker after the panel was built."""
        if self.value_label is not None:
            text = self._value_text(value)
            self.value_label.setText(text)
            self.facts["Value"] = text

    def set_stats_progress(self, p: Progress) -> None:
        if self.stats_status is not None and "stat:min" not in self.facts:
            self.stats_status.setText(f"Computing {p.what}… {100 * p.fraction:.0f}%")

    def set_stats_error(self, message: str) -> None:
        if self.stats_status is not None:
            self.stats_status.setText(message)

    def set_stats(self, s: TensorStats) -> None:
        if not self.stat_labels:
            return
        values = {"min": _fmt(s.min), "max": _fmt(s.max), "mean": _fmt(s.mean), "std": _fmt(s.std),
                  "l2": _fmt(s.l2),
                  "zeros": f"{s.zeros:,} ({100 * (s.zero_fraction or 0):.3g}%)",
                  "nan": f"{s.nan:,}", "inf": f"{s.inf:,}" + (f" (+{s.posinf:,} / -{s.neginf:,})" if s.inf else "")}
        for k, v in values.items():
            self.stat_labels[k].setText(v)
            self.facts["stat:" + k] = v
        if self.stats_status is not None:
            self.stats_status.setText(f"Over {s.numel:,} values ({s.finite:,} finite)"
                                      + (f". {s.note}" if s.note else ""))

    def _totals(self, node: Node) -> None:
        n, numel, nbytes, by_dtype, devices = node.totals()
        rows = [("Tensors", f"{n:,}"), ("Elements", f"{numel:,}"), ("Bytes", f"{nbytes:,} ({human_bytes(nbytes)})")]
        if devices:
            rows.append(("Devices", safe_text(", ".join(sorted(devices)), 200)))
        info = node.info
        if isinstance(info, StateDictInfo):
            rows.append(("Parameters", f"{info.n_parameters:,}" + ("  (inferred: buffers excluded)"
                                                                   if info.kind != "module" else "")))
            if info.class_name:
                rows.append(("Class", safe_text(info.class_name, 200) + "  (not imported)"))
            if info.prefix:
                rows.append(("Key prefix", f"'{safe_text(info.prefix[0])}' ({info.prefix[1]})"))
        if node.kind == "object":
            rows.append(("Class", safe_text(node.type_text, 200) + "  (not imported; shown as a stand-in)"))
        rows.extend((label, "\n".join(safe_text(line, 300) for line in text.split("\n")))
                    for label, text in program_facts(node.value))
        self._form(rows)
        if by_dtype:
            self._heading("Parameters by dtype" if node.kind in ("state_dict", "module", "group")
                          else "Elements by dtype")
            table = self._table(["dtype", "elements", "share"], [
                (name, f"{count:,}", f"{100 * count / numel:.1f}%" if numel else "")
                for name, count in by_dtype.most_common()])
            self._lay.addWidget(table)

    def _table(self, headers: list[str], rows: list[tuple], stretch: int = -1) -> QTableWidget:
        table = QTableWidget(len(rows), len(headers), self._body)
        table.setHorizontalHeaderLabels(headers)
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                table.setItem(r, c, QTableWidgetItem(safe_text(value, 200)))
        table.resizeColumnsToContents()
        header = table.horizontalHeader()
        header.setSectionResizeMode(stretch if stretch >= 0 else len(headers) - 1, QHeaderView.ResizeMode.Stretch)
        height = table.horizontalHeader().height() + sum(table.rowHeight(i) for i in range(min(len(rows), 12))) + 4
        table.setMinimumHeight(min(height, 320))
        table.setMaximumHeight(max(height, 60) if len(rows) <= 12 else 320)
        return table

    def _optimizer(self, node: Node, opt: OptimizerInfo) -> None:
        self._form([("Type", opt.label + "  (inferred from its hyperparameters)"),
                    ("Parameter states", f"{opt.n_states:,} of {len(opt.param_ids):,} parameters"),
                    ("Names", safe_text(opt.names_note, 300) or "–")])
        self._heading("param_groups")
        keys: list[str] = []
        for g in opt.groups:
            for k in g:
                if k not in keys:
                    keys.append(k)
        rows = [(k,) + tuple(_fmt(g.get(k)) if not isinstance(g.get(k), (list, tuple))
                            else safe_text(g.get(k), 60) for g in opt.groups) for k in keys]
        self.hyper_table = self._table(["hyperparameter"] + [f"group {i}" for i in range(len(opt.groups))], rows)
        self._lay.addWidget(self.hyper_table)
        self._heading("Parameter states (click a name to go to the parameter, an id to its state)")
        state_node = next((c for c in node.children() if c.key == "state"), None)
        entries = state_node.children() if state_node is not None else []
        rows = []
        for c in entries[:2000]:
            name = opt.param_names.get(c.key, "")
            bufs = ", ".join(f"{key_text(k.key)} {k.shape_text()}" for k in c.children()[:6]) if c.has_children else ""
            rows.append((key_text(c.key), (name + (" (inferred)" if name and opt.names_inferred else "")) or "–", bufs))
        self.state_table = self._table(["id", "parameter", "state"], rows)
        self.state_table.cellClicked.connect(lambda r, col: self._on_state_clicked(node, entries, r, col))
        self._lay.addWidget(self.state_table)

    def _on_state_clicked(self, node: Node, entries: list[Node], row: int, col: int) -> None:
        if row >= len(entries):
            return
        target: Node | None = entries[row]
        if col == 1 and self._resolver is not None:
            name = node.info.param_names.get(target.key)
            target = self._resolver(node, name) if name else None
        if target is not None:
            self.navigate_requested.emit(target)

    def _param_state(self, node: Node) -> None:
        self._totals(node)
        name = node.info
        if not name:
            self._lay.addWidget(_label("The parameter this state belongs to is not known.", self._body))
            return
        opt_node = node.parent.parent if node.parent is not None else None
        button = QPushButton(f"Go to parameter {safe_text(name, 120)}", self._body)
        button.setObjectName("goto-parameter")
        self._lay.addWidget(button)
        if opt_node is None or self._resolver is None:
            button.setEnabled(False)
            return
        target = self._resolver(opt_node, str(name).removesuffix(" (inferred)"))
        button.setEnabled(target is not None)
        button.clicked.connect(lambda: self.navigate_requested.emit(target))

    def _value(self, node: Node) -> None:
        text = QPlainTextEdit(self._body)
        text.setReadOnly(True)
        full = node.value_text() if node.kind != "string" else '"' + safe_text(node.value, 20_000) + '"'
        text.setPlainText(safe_text(full, 20_000) if node.kind != "string" else full)
        text.setMaximumHeight(120)
        self.facts["Value"] = text.toPlainText()
        self._lay.addWidget(text)
