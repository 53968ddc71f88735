"""What torch's weights-only unpickler would make of a checkpoint the reader has opened (no torch needed).

``torch.load`` (weights_only=True, the default since 2.6) accepts a pickle only when every ``GLOBAL`` is
allowlisted, every opcode is one of the protocol-2 set it implements, and the objects those globals
build are filled in ways it allows. :func:`file_facts` gathers what decides that from the reader's
record (``Checkpoint.pickles``: the globals and unusual opcodes of each pickle) and one walk over the
object tree (what the globals built: numpy dtypes, pickled modules, dict and list subclasses filled
by ``SETITEMS``/``APPENDS``, objects with ``__slots__``). :func:`check` compares those facts with one
release's rules (``weights_only_table``) and an allowlist; it never imports anything a file names.

Known gaps (each rare in real files, each said in the report only when it applies): a numpy array
passed to ``_rebuild_device_tensor_from_numpy`` (its dtype class is not seen after the rebuild);
``NEWOBJ`` of a *default* class in 2.4/2.5 (only user classes there); classes of ``REDUCE`` results
other than numpy dtypes, which only running the pickle would reveal.
"""
from __future__ import annotations

import keyword
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..model.checkpoint import Checkpoint
from ..model.objects import Buildable, GlobalRef, PickledDict, StandIn
from ..model.tensor import TensorRef
from ..model.walk import MAX_NODES, module_attrs
from ..read.pickle.danger import danger_reason
from ..read.pickle.reconstructors import _py3_names
from ..read.pickle.unpickler import _OP, OPCODE_NAMES
from .weights_only_table import BLOCKED_MODULES, IMPORT_REGISTERED, Release

# Opcodes torch's weights-only unpickler implements (the same in 2.4 to 2.14); anything else raises
# "Unsupported operand N". Protocol 4/5 streams always use FRAME (149), MEMOIZE and SHORT_BINUNICODE.
ACCEPTED_OPCODES = frozenset(_OP[name] for name in (
    "GLOBAL", "NEWOBJ", "REDUCE", "BUILD", "APPEND", "APPENDS", "SETITEM", "SETITEMS", "MARK", "TUPLE", "TUPLE1",
    "TUPLE2", "TUPLE3", "NONE", "NEWFALSE", "NEWTRUE", "EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET",
    "BININT", "BININT1", "BININT2", "BINFLOAT", "BINUNICODE", "SHORT_BINSTRING", "BINPERSID", "BINGET",
    "LONG_BINGET", "BINPUT", "LONG_BINPUT", "LONG1", "PROTO", "STOP"))

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def is_python_name(dotted: str) -> bool:
    """True when ``dotted`` is a dotted path of Python identifiers (what may go into generated code)."""
    parts = dotted.split(".")
    return bool(parts) and all(_IDENT.match(p) and not keyword.iskeyword(p) for p in parts)


@dataclass
class FileFacts:
    """What decides the weights-only verdict, gathered without torch (see :func:`file_facts`)."""

    globals: Counter = field(default_factory=Counter)      # "module.name" (Python 3 names) -> count
    opcodes: set[int] = field(default_factory=set)         # unusual opcodes the relevant pickles use
    protocols: set[int] = field(default_factory=set)
    numpy_dtypes: set[str] = field(default_factory=set)    # "numpy.dtypes.Float64DType": BUILD needs them
    module_classes: set[str] = field(default_factory=set)  # classes of pickled nn.Modules
    called: set[str] = field(default_factory=set)          # globals called with arguments (REDUCE)
    dict_fills: set[str] = field(default_factory=set)      # non-dict objects given items by SETITEM(S)
    list_fills: set[str] = field(default_factory=set)      # non-list objects given items by APPEND(S)
    slot_states: set[str] = field(default_factory=set)     # objects built from (dict, slots) states
    module_pids: bool = False                               # legacy ('module', cls, ...) persistent ids
    locations: Counter = field(default_factory=Counter)     # storage location -> storages
    damaged: list[str] = field(default_factory=list)        # storages torch could not read
    walk_complete: bool = True


def relevant_pickles(ckpt: Checkpoint) -> list:
    """The pickles torch.load unpickles for this file: a zip's data.pkl, all five of a legacy file."""
    if ckpt.format in ("torch-zip", "torchscript"):
        return [p for p in ckpt.pickles if p.pickle == "data.pkl"]
    return list(ckpt.pickles)


def file_facts(ckpt: Checkpoint, *, max_nodes: int = MAX_NODES) -> FileFacts:
    """The facts of an opened checkpoint: the reader's record of its pickles plus one walk of its tree."""
    facts = FileFacts()
    for p in relevant_pickles(ckpt):
        for (module, name), count in p.counts.items():
            m, n = _py3_names(module, name)
            facts.globals[f"{m}.{n}"] += count
        facts.opcodes.update(getattr(p, "opcodes", ()))
        if getattr(p, "protocol", 0):
            facts.protocols.add(p.protocol)
    facts.module_pids = bool(ckpt.meta.get("class_sources")) if isinstance(ckpt.meta, dict) else False
    storages = ckpt.storages.values()
    locations = Counter([st.location for st in storages])
    for st in [st for st in storages if st.problem is not None or st.source is None
               or st.source.size < st.nbytes]:
        facts.damaged.append(f"storage {st.key}: {st.problem}" if st.problem else
                             f"storage {st.key} is missing from the file" if st.source is None else
                             f"storage {st.key} holds {st.source.size:,} of its {st.nbytes:,} bytes")
    facts.locations.update({str(k): n for k, n in locations.items()})
    facts.walk_complete = _walk(ckpt.root, facts, max_nodes)
    return facts


_PLAIN = frozenset((str, bytes, int, float, bool, complex))


def _numpy_dtype_class(dt: Any) -> str:
    return f"numpy.dtypes.{type(dt).__name__}"


def _walk(root: Any, facts: FileFacts, max_nodes: int) -> bool:
    """Visit every value once (iteratively, shared values once); note what the weights-only rules care about.

    The hot path is a state_dict: one dict and a tensor handle per entry, so tensors and plain values are
    dispatched on their exact type before anything else (this walk runs each time the window opens a file)."""
    import sys
    np = sys.modules.get("numpy")
    generic = np.generic if np is not None else ()
    ndarray = np.ndarray if np is not None else ()
    np_dtype = np.dtype if np is not None else ()
    plain = _PLAIN
    seen: set[int] = set()
    todo = [root]
    pop, push, extend = todo.pop, todo.append, todo.extend
    visited = 0
    while todo:
        value = pop()
        tv = type(value)
        if tv is TensorRef:
            if value.extra:
                extend(value.extra.values())
            continue
        if tv in plain or value is None:
            continue
        if isinstance(value, Buildable):
            value = value.finished()
            tv = type(value)
        if isinstance(value, generic):           # before the number test: np.float64 is a float subclass
            facts.numpy_dtypes.add(_numpy_dtype_class(value.dtype))
            continue
        if isinstance(value, (str, bytes, int, float, complex, TensorRef)) or value is None:
            continue
        if id(value) in seen:
            continue
        seen.add(id(value))
        visited += 1
        if visited > max_nodes:
            return False
        if tv is dict or isinstance(value, dict):
            extend(value.values())
            if tv is PickledDict:
                if value.type_name not in ("collections.OrderedDict", "collections.Counter", "builtins.dict") and value:
                    facts.dict_fills.add(value.type_name)
                attrs = value.__dict__.get("_pickle_attrs")
                if attrs:
                    extend(attrs.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            extend(value)
        elif tv is StandIn:
            name = value.qualname
            if isinstance(value.cls, StandIn):
                push(value.cls)
            if value.via == "REDUCE" and isinstance(value.cls, GlobalRef):
                facts.called.add(name)
            if module_attrs(value) is not None:
                facts.module_classes.add(name)
            if value.items:
                facts.dict_fills.add(name)
                for k, v in value.items:
                    push(k)
                    push(v)
            if value.list_items:
                facts.list_fills.add(name)
                extend(value.list_items)
            st = value.state
            if (isinstance(st, tuple) and len(st) == 2 and isinstance(st[1], dict)
                    and (st[0] is None or isinstance(st[0], dict))):
                facts.slot_states.add(name)
            if st is not None:
                push(st)
            if value.args:
                extend(value.args)
            if value.kwargs:
                extend(value.kwargs.values())
        elif isinstance(value, ndarray):
            facts.numpy_dtypes.add(_numpy_dtype_class(value.dtype))
        elif isinstance(value, np_dtype):
            facts.numpy_dtypes.add(_numpy_dtype_class(value))
    return True


# -- the check -------------------------------------------------------------------------------------------
@dataclass
class Problem:
    """One thing the weights-only unpickler refuses. ``fixable``: an allowlist entry or an import fixes it."""

    kind: str
    names: list[str]
    message: str
    fixable: bool


@dataclass
class WeightsOnlyCheck:
    """The unpickler's verdict on one file under one release and allowlist."""

    blocking: list[str]                  # every global it refuses, as torch names them
    allowlist: list[str]                 # what a snippet would allowlist (fixable blocking globals)
    imports: list[str]                   # modules to import first (NJT / DTensor registrations)
    problems: list[Problem]

    @property
    def accepts(self) -> bool:
        return not self.problems

    @property
    def fixable(self) -> bool:
        return all(p.fixable for p in self.problems)


def check(facts: FileFacts, release: Release, allowed: frozenset[str]) -> WeightsOnlyCheck:
    """What ``torch.load(weights_only=True)`` under ``release`` with the default allowlist ``allowed``
    refuses in a file with ``facts``."""
    problems: list[Problem] = []
    # FRAME comes right after PROTO in protocol 4/5 streams: it is the operand torch stops at.
    refused_ops = sorted((op for op in facts.opcodes if op not in ACCEPTED_OPCODES), key=lambda op: (op != 0x95, op))
    if refused_ops:
        names = [f"{OPCODE_NAMES.get(op, 'opcode')} ({op})" for op in refused_ops]
        proto = max(facts.protocols, default=0)
        how = (f"pickle protocol {proto}" if proto != 2 else "opcodes outside protocol 2's binary set")
        problems.append(Problem("protocol", names,
                                f"the pickle uses {how}: {', '.join(names)}; torch's weights-only unpickler reads "
                                f"only protocol 2's binary opcodes and stops with 'Unsupported operand "
                                f"{refused_ops[0]}'", False))

    needed = set(facts.globals) | facts.numpy_dtypes
    blocking = sorted(n for n in needed if n not in allowed)
    imports: set[str] = set()
    dangerous, main, odd, fixable_names = [], [], [], []
    for name in blocking:
        module, _, short = name.rpartition(".")
        if release.import_registered and name in IMPORT_REGISTERED:
            imports.add(IMPORT_REGISTERED[name])
            continue
        top = module.split(".")[0]
        if danger_reason(module, short) is not None or (release.blocks_modules and top in BLOCKED_MODULES):
            dangerous.append(name)
        elif module == "__main__":
            main.append(name)
        elif not is_python_name(name):
            odd.append(name)
        else:
            fixable_names.append(name)
    if dangerous:
        problems.append(Problem("dangerous", dangerous,
                                f"the file names {', '.join(dangerous)}, which can run code or touch files; the "
                                f"unpickler refuses {'them' if len(dangerous) > 1 else 'it'} and no one should "
                                f"allowlist {'them' if len(dangerous) > 1 else 'it'}", False))
    if main:
        problems.append(Problem("main", main,
                                f"{', '.join(main)} {'were' if len(main) > 1 else 'was'} defined in the script that "
                                f"saved the file (__main__); an allowlist in another script cannot name "
                                f"{'them' if len(main) > 1 else 'it'}", False))
    if odd:
        problems.append(Problem("odd_names", odd, f"{', '.join(odd)}: not Python names, so no code can allowlist "
                                                  f"{'them' if len(odd) > 1 else 'it'}", False))
    if fixable_names:
        problems.append(Problem("globals", fixable_names,
                                f"not allowed by default: {', '.join(fixable_names)}", True))
    if imports:
        problems.append(Problem("imports", sorted(imports),
                                f"torch registers these globals only once {', '.join(sorted(imports))} "
                                f"{'are' if len(imports) > 1 else 'is'} imported", True))

    if facts.module_pids:
        problems.append(Problem("module_pids", [],
                                "a legacy-format file that stores pickled modules' classes as persistent ids "
                                "('module', class, source); the weights-only unpickler loads only storages that "
                                "way", False))
    if facts.list_fills and not release.appends_to_list_subclasses:
        names = sorted(facts.list_fills)
        problems.append(Problem("list_fills", names,
                                f"{', '.join(names)}: list subclasses filled by APPEND(S); torch before 2.14 "
                                f"appends to exact lists only", False))
    if facts.dict_fills and release.setitems_on_dicts_only:
        names = sorted(facts.dict_fills)
        problems.append(Problem("dict_fills", names,
                                f"{', '.join(names)}: filled by SETITEM(S); from torch 2.10 the unpickler sets "
                                f"items only in dict, OrderedDict and Counter", False))
    if facts.slot_states and not release.builds_slots:
        names = sorted(facts.slot_states)
        problems.append(Problem("slots", names,
                                f"{', '.join(names)}: objects with __slots__; torch {release.version} cannot build "
                                f"their (dict, slots) state (2.6 can)", False))
    allowlist = sorted(fixable_names)
    return WeightsOnlyCheck(blocking, allowlist, sorted(imports), problems)
