"""Warm Start Check: would the (edited) state_dict load into the model whose state_dict is in another file?

The target file is opened in a worker (metadata only). The dialog shows what
``load_state_dict(strict=False)`` would report (``warmstart.compare``) and the renames
``warmstart.suggest`` proposes; the user accepts them one by one, the report updating after each, or
fits the state_dict in one click (``warmstart.plan_fit``, what ``convert --fit-to`` does: the renames,
then unexpected keys and keys of another shape dropped). OK returns one Rename step per accepted
suggestion and, after a fit, one Drop step. The lists open on the first kind of problem there is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Generator

from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QListWidget,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ...core.analyze.warmstart import Suggestion, WarmStartReport, accept, compare, plan_fit, suggest
from ...core.edit.ops import Drop, Rename, Step, find_state_dicts
from ...core.model import keypath
from ...core.model.tensor import TensorRef
from ...core.util.progress import Progress
from ...core.util.textsafe import key_text, safe_text
from ...core.util.units import shape_text
from ..widgets.messages import error_text
from ..widgets.workers import TaskRunner, WorkerError
from .common import StepDialog, at_text, plain_label, where_text

MAX_LISTED = 5000
FILE_FILTER = ("Checkpoints (*.pt *.pth *.tar *.bin *.ckpt *.safetensors *.pkl *.pth.tar);;All files (*)")


@dataclass
class TargetStateDict:
    path: tuple
    kind: str                        # "state_dict", "module", "script"
    tensors: dict[str, TensorRef]

    @property
    def label(self) -> str:
        what = {"module": "pickled module", "script": "TorchScript module"}.get(self.kind, "state_dict")
        return f"{where_text(self.path)} ({what}, {len(self.tensors):,} tensors)"


@dataclass
class TargetFile:
    path: str
    state_dicts: list[TargetStateDict] = field(default_factory=list)


def target_steps(path: str) -> Generator[Progress, None, TargetFile]:
    """Open ``path`` and list its state_dicts (and pickled modules' state_dicts); only shapes are kept."""
    from ...core.model.interpret import analyze
    from ...core.read.open import open_checkpoint
    name = os.path.basename(path)
    yield Progress(0, 2, f"Opening {name}")
    ck = open_checkpoint(path)
    try:
        yield Progress(1, 2, f"Finding the state_dicts in {name}")
        an = analyze(ck.root)
        out = TargetFile(os.path.abspath(path))
        for sd in an.state_dicts:
            tensors = {k: t for k, t in sd.entries if isinstance(k, str) and isinstance(t, TensorRef)}
            if tensors:
                out.state_dicts.append(TargetStateDict(tuple(sd.path), sd.kind, tensors))
        return out
    finally:
        ck.close()      # only names and shapes are needed from here on


class WarmStartState:
    """The state_dicts of the edited file (``sources``), the target's, the suggestions accepted so far."""

    def __init__(self, sources: list[tuple[tuple, dict]]):
        self.sources = sources
        self.source_index = 0
        self.target: TargetFile | None = None
        self.target_index = 0
        self.accepted: list[Suggestion] = []
        self.dropped: list[str] = []          # keys a fit drops (named after the accepted renames)
        self.report: WarmStartReport | None = None
        self.suggestions: list[Suggestion] = []

    @classmethod
    def for_root(cls, root: Any) -> "WarmStartState":
        return cls(find_state_dicts(root))

    def working_source(self) -> dict:
        """The chosen state_dict with the accepted suggestions applied and a fit's drops made (a preview,
        through the core)."""
        sd = self.sources[self.source_index][1]
        for s in self.accepted:
            sd = accept(sd, s)
        if self.dropped:
            gone = set(self.dropped)
            sd = {k: v for k, v in sd.items() if k not in gone}
        return sd

    def fit(self) -> None:
        """Do what ``convert --fit-to`` does on top of what is accepted: the best renames in turn, then
        drop the keys that still would not load (unexpected, or of another shape)."""
        if self.target is None or not self.target.state_dicts or not self.sources:
            return
        plan = plan_fit(self.working_source(), self.target.state_dicts[self.target_index].tensors)
        self.accepted.extend(plan.renames)
        self.dropped.extend(plan.drop_unexpected + [k for k, _, _ in plan.drop_shape])
        self.refresh()

    @property
    def can_fit(self) -> bool:
        rep = self.report
        return rep is not None and bool(rep.unexpected_keys or rep.shape_mismatches or self.suggestions)

    def set_source(self, index: int) -> None:
        if index != self.source_index:
            self.source_index = index
            self.accepted.clear()
            self.dropped.clear()
            self.refresh()

    def set_target(self, target: TargetFile) -> None:
        self.target = target
        self.accepted.clear()
        self.dropped.clear()
        self.target_index = self.best_target_index()
        self.refresh()

    def best_target_index(self) -> int:
        """The target state_dict that the most keys already match (the first on a tie)."""
        if self.target is None or not self.target.state_dicts or not self.sources:
            return 0
        sd = self.working_source()
        scores = [len(compare(sd, t.tensors).matched) for t in self.target.state_dicts]
        return max(range(len(scores)), key=lambda i: (scores[i], -i))

    def set_target_index(self, index: int) -> None:
        if index != self.target_index:
            self.target_index = index
            self.accepted.clear()
            self.dropped.clear()
            self.refresh()

    def refresh(self) -> None:
        if self.target is None or not self.target.state_dicts or not self.sources:
            self.report, self.suggestions = None, []
            return
        self.report = compare(self.working_source(), self.target.state_dicts[self.target_index].tensors)
        self.suggestions = suggest(self.report)

    def accept_suggestion(self, index: int) -> Suggestion:
        s = self.suggestions[index]
        self.accepted.append(s)
        self.refresh()
        return s

    def take_back(self) -> None:
        """Undo the last thing accepted: a fit's drops first, then renames one at a time."""
        if self.dropped:
            self.dropped.clear()
            self.refresh()
        elif self.accepted:
            self.accepted.pop()
            self.refresh()

    def steps(self) -> list[Step]:
        if not self.sources:
            return []
        path = self.sources[self.source_index][0]
        at = at_text(path)
        out: list[Step] = [Rename((s.rule,), at) for s in self.accepted]
        if self.dropped:
            out.append(Drop(tuple(keypath.format_path(tuple(path) + (k,)) for k in self.dropped)))
        return out


class WarmStartDialog(StepDialog):
    def __init__(self, parent: QWidget | None, root: Any):
        super().__init__(parent, "Warm Start Check")
        self.state = WarmStartState.for_root(root)
        self.runner = TaskRunner(self)
        self.loading = False
        self.load_error = ""

        form = QFormLayout()
        self.source_combo = QComboBox(self)
        for path, sd in self.state.sources:
            self.source_combo.addItem(f"{where_text(path)} ({len(sd):,} keys)")
        self.source_combo.currentIndexChanged.connect(self._on_source_changed)
        form.addRow("State dict to load:", self.source_combo)
        row = QHBoxLayout()
        self.target_edit = QLineEdit(self)
        self.target_edit.setPlaceholderText("A checkpoint of the model to warm-start (its state_dict)")
        self.target_edit.returnPressed.connect(lambda: self.open_target(self.target_edit.text()))
        browse = QPushButton("Browse…", self)
        browse.clicked.connect(self._on_browse)
        row.addWidget(self.target_edit, 1)
        row.addWidget(browse)
        form.addRow("Target file:", row)
        self.target_combo = QComboBox(self)
        self.target_combo.setEnabled(False)
        self.target_combo.currentIndexChanged.connect(self._on_target_changed)
        form.addRow("Target state_dict:", self.target_combo)
        self.body.addLayout(form)
        self.status_label = plain_label("", self)
        self.body.addWidget(self.status_label)
        self.summary_label = plain_label("", self)
        f = self.summary_label.font()
        f.setBold(True)
        self.summary_label.setFont(f)
        self.body.addWidget(self.summary_label)

        self.lists = QTabWidget(self)
        self.matched_list = self._list("matched")
        self.missing_list = self._list("missing_keys")
        self.unexpected_list = self._list("unexpected_keys")
        self.mismatch_table = QTableWidget(0, 3, self)
        self.mismatch_table.setHorizontalHeaderLabels(["Key", "Shape here", "Shape in the target"])
        self.mismatch_table.verticalHeader().setVisible(False)
        self.mismatch_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.mismatch_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for w, name in ((self.matched_list, "Matched"), (self.missing_list, "missing_keys"),
                        (self.unexpected_list, "unexpected_keys"), (self.mismatch_table, "Shape mismatches")):
            self.lists.addTab(w, name)
        self.body.addWidget(self.lists, 1)

        box = QGroupBox("Suggested renames (accept one at a time; the lists update)", self)
        bl = QVBoxLayout(box)
        self.suggestion_list = QListWidget(box)
        self.suggestion_list.setObjectName("warm-start-suggestions")
        self.suggestion_list.setMaximumHeight(130)
        self.suggestion_list.currentRowChanged.connect(lambda _r: self._update_buttons())
        self.suggestion_list.itemDoubleClicked.connect(lambda _item: self._on_accept_clicked())
        bl.addWidget(self.suggestion_list)
        row = QHBoxLayout()
        self.accept_button = QPushButton("Accept", box)
        self.accept_button.clicked.connect(self._on_accept_clicked)
        self.take_back_button = QPushButton("Take back the last", box)
        self.take_back_button.clicked.connect(self._on_take_back)
        self.fit_button = QPushButton("Fit to the target", box)
        self.fit_button.setObjectName("warm-start-fit")
        self.fit_button.setToolTip("Accept the renames that make the most keys match, then drop the keys that still "
                                   "would not load (unexpected ones, and those of another shape, such as a new "
                                   "classifier head): what `ckptviewer convert --fit-to` does")
        self.fit_button.clicked.connect(self._on_fit_clicked)
        self.accepted_label = plain_label("", box)
        row.addWidget(self.accept_button)
        row.addWidget(self.take_back_button)
        row.addWidget(self.fit_button)
        row.addWidget(self.accepted_label, 1)
        bl.addLayout(row)
        self.body.addWidget(box)
        self.finish_layout()
        self.resize(820, 640)
        if not self.state.sources:
            self.status_label.setText("There is no state_dict in this checkpoint to check. For a pickled model, "
                                      "use “Keep only this” on it first (its state_dict becomes the checkpoint).")
            self.target_edit.setEnabled(False)
            browse.setEnabled(False)
        else:
            self.status_label.setText("Choose the checkpoint of the model you want to load these weights into.")
        self._show_report()

    def _list(self, name: str) -> QListWidget:
        w = QListWidget(self)
        w.setObjectName(f"warm-start-{name}")
        w.setUniformItemSizes(True)
        return w

    # -- target -----------------------------------------------------------------------------------
    def _on_browse(self) -> None:
        start = os.path.dirname(self.target_edit.text()) or ""
        path, _ = QFileDialog.getOpenFileName(self, "Target checkpoint", start, FILE_FILTER)
        if path:
            self.open_target(path)

    def open_target(self, path: str) -> None:
        """Open ``path`` in a worker; the report appears when it is read."""
        path = path.strip()
        if not path or not self.state.sources:
            return
        self.target_edit.setText(path)
        self.loading = True
        self.load_error = ""
        self.status_label.setText(f"Opening {safe_text(os.path.basename(path), 200)}…")
        self.runner.submit("target", target_steps, path, on_result=self._on_target_loaded,
                           on_error=self._on_target_failed)

    def _on_target_loaded(self, target: TargetFile | None) -> None:
        self.loading = False
        if target is None:
            return
        if not target.state_dicts:
            self.load_error = f"{os.path.basename(target.path)} holds no state_dict or model to compare with."
            self.status_label.setText(safe_text(self.load_error, 400))
            self.state.target = None
            self.state.refresh()
            self._show_report()
            return
        self.state.set_target(target)
        self.target_combo.blockSignals(True)
        self.target_combo.clear()
        for t in target.state_dicts:
            self.target_combo.addItem(t.label)
        self.target_combo.setCurrentIndex(self.state.target_index)
        self.target_combo.setEnabled(len(target.state_dicts) > 1)
        self.target_combo.blockSignals(False)
        self.status_label.setText(f"Compared with {safe_text(target.path, 300)}")
        self._show_report()

    def _on_target_failed(self, err: WorkerError) -> None:
        self.loading = False
        self.load_error = f"Could not open the target: {error_text(err.exc)}"
        self.status_label.setText(safe_text(self.load_error, 600))

    def _on_source_changed(self, index: int) -> None:
        self.state.set_source(index)
        self._show_report()

    def _on_target_changed(self, index: int) -> None:
        if index >= 0:
            self.state.set_target_index(index)
            self._show_report()

    # -- report -----------------------------------------------------------------------------------
    def _fill(self, w: QListWidget, keys: list[str]) -> None:
        w.clear()
        w.addItems([key_text(k) for k in keys[:MAX_LISTED]])
        if len(keys) > MAX_LISTED:
            w.addItem(f"… and {len(keys) - MAX_LISTED:,} more")

    def _show_report(self) -> None:
        rep = self.state.report
        names = ("Matched", "missing_keys", "unexpected_keys", "Shape mismatches")
        if rep is None:
            for w in (self.matched_list, self.missing_list, self.unexpected_list):
                w.clear()
            self.mismatch_table.setRowCount(0)
            for i, name in enumerate(names):
                self.lists.setTabText(i, name)
            self.summary_label.setText("")
        else:
            self._fill(self.matched_list, rep.matched)
            self._fill(self.missing_list, rep.missing_keys)
            self._fill(self.unexpected_list, rep.unexpected_keys)
            shown = rep.shape_mismatches[:MAX_LISTED]
            self.mismatch_table.setRowCount(len(shown))
            for r, (k, a, b) in enumerate(shown):
                for c, text in enumerate((key_text(k), shape_text(a), shape_text(b))):
                    self.mismatch_table.setItem(r, c, QTableWidgetItem(text))
            counts = (len(rep.matched), len(rep.missing_keys), len(rep.unexpected_keys), len(rep.shape_mismatches))
            for i, (name, n) in enumerate(zip(names, counts)):
                self.lists.setTabText(i, f"{name} ({n:,})")
            if self.lists.widget(self.lists.currentIndex()) is self.matched_list and not rep.loads_strictly:
                # Open on the problems: the first list that says why the weights do not load as they are.
                first = next((i for i, n in enumerate(counts) if n and i > 0), 0)
                self.lists.setCurrentIndex(first)
            text = rep.summary()
            if rep.loads_strictly:
                text += " — loads with load_state_dict(strict=True)"
            self.summary_label.setText(text)
        self.suggestion_list.clear()
        for s in self.state.suggestions:
            self.suggestion_list.addItem(safe_text(s.reason, 300))
        if self.state.suggestions:
            self.suggestion_list.setCurrentRow(0)
        elif rep is not None:
            self.suggestion_list.addItem("No rename would match more keys." if not rep.loads_strictly
                                         else "Nothing to suggest: every key matches.")
        accepted = self.state.accepted
        done = [safe_text(s.reason.split(':')[0], 80) for s in accepted]
        if self.state.dropped:
            done.append(f"drop {len(self.state.dropped):,} key{'s' if len(self.state.dropped) != 1 else ''}")
        self.accepted_label.setText(("Accepted: " + "; ".join(done)) if done else "")
        self._update_buttons()

    def _update_buttons(self) -> None:
        has = bool(self.state.suggestions) and 0 <= self.suggestion_list.currentRow() < len(self.state.suggestions)
        self.accept_button.setEnabled(has)
        self.take_back_button.setEnabled(bool(self.state.accepted or self.state.dropped))
        self.fit_button.setEnabled(self.state.can_fit)
        n, d = len(self.state.accepted), len(self.state.dropped)
        if d:
            text = f"Apply the fit ({n} rename{'s' if n != 1 else ''}, {d:,} key{'s' if d != 1 else ''} dropped)"
        else:
            text = f"Apply {n} rename{'s' if n != 1 else ''}" if n else "Apply renames"
        self.set_ok(n > 0 or d > 0, text)

    def accept_suggestion(self, index: int) -> Suggestion:
        s = self.state.accept_suggestion(index)
        self._show_report()
        return s

    def _on_accept_clicked(self) -> None:
        row = self.suggestion_list.currentRow()
        if 0 <= row < len(self.state.suggestions):
            self.accept_suggestion(row)

    def fit(self) -> None:
        self.state.fit()
        self._show_report()

    def _on_fit_clicked(self) -> None:
        self.fit()

    def _on_take_back(self) -> None:
        self.state.take_back()
        self._show_report()

    def steps(self) -> list[Step]:
        return self.state.steps()

    def done(self, result: int) -> None:
        self.runner.shutdown(wait=False)
        super().done(result)

    @classmethod
    def ask(cls, parent: QWidget | None, root: Any) -> list[Step]:
        dlg = cls(parent, root)
        try:
            return dlg.steps() if dlg.run() else []
        finally:
            dlg.deleteLater()
