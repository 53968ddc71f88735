"""What the raw tree means: state_dicts, optimizers, pickled modules, training checkpoints, prefixes.

Everything here is inference from structure (keys, shapes, class names); none of it needs the
model's code. Inferred facts are marked as such, so the UI can say "inferred" next to them.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..util.units import counted
from .objects import PickledDict, StandIn
from .tensor import TensorRef
from .walk import module_attribute_tensors, module_attrs, module_state_dict, unwrap

BUFFER_NAMES = {"running_mean", "running_var", "num_batches_tracked"}
WRAPPER_PREFIXES = [
    ("module.", "DataParallel/DistributedDataParallel"),
    ("_orig_mod.", "torch.compile"),
    ("_fsdp_wrapped_module.", "FullyShardedDataParallel"),
    ("_checkpoint_wrapped_module.", "activation checkpointing"),
]
TRAINING_KEYS = ("epoch", "epochs", "n_epoch", "global_step", "step", "iteration", "iter", "steps",
                 "loss", "best_loss", "val_loss", "acc", "best_acc", "accuracy", "best_accuracy", "lr")
MAX_CONTAINERS = 20_000
MAX_ROLE_DEPTH = 6


@dataclass
class StateDictInfo:
    path: tuple
    entries: list[tuple[str, TensorRef]]
    kind: str = "state_dict"            # "state_dict" (a mapping), "module" (a pickled nn.Module),
                                        # or "script" (a TorchScript module's attributes)
    class_name: str | None = None       # for modules
    prefix: tuple[str, str] | None = None   # (prefix, what adds it), when every key starts with it
    shared_prefix: str | None = None    # another first component all keys share (e.g. "model.")

    @property
    def parameter_entries(self) -> list[tuple[str, TensorRef]]:
        """What ``model.parameters()`` would yield, in order, tied tensors once (inferred for mappings)."""
        if self._params is None:
            self._params = self._parameter_entries()
        return self._params

    def _parameter_entries(self) -> list[tuple[str, TensorRef]]:
        if self.kind == "module":
            return _module_parameters(self.module)
        # Entries that say what they are (nn.Parameter objects, a program's is_param flags) decide; a
        # plain state_dict's tensors are told apart by name and dtype. One pass collects both answers.
        seen_name: set = set()
        seen_kind: set = set()
        by_name: list[tuple[str, TensorRef]] = []
        by_kind: list[tuple[str, TensorRef]] = []
        for name, t in self.entries:
            if not isinstance(t, TensorRef):
                continue
            is_param = t.kind == "parameter"
            by_name_ok = not is_probable_buffer(name, t)
            if not (is_param or by_name_ok):
                continue
            ident = (t.storage_key, t.offset, t.shape, t.stride) if t.storage is not None else id(t)
            if by_name_ok and ident not in seen_name:
                seen_name.add(ident)
                by_name.append((name, t))
            if is_param and ident not in seen_kind:
                seen_kind.add(ident)
                by_kind.append((name, t))
        return by_kind if (self.kinds_known or by_kind) else by_name

    module: Any = None
    kinds_known: bool = False           # each tensor's kind says whether it is a parameter (a .pt2 program)
    _params: list | None = field(default=None, repr=False, compare=False)

    @property
    def n_parameters(self) -> int:
        return sum(t.numel for _, t in self.parameter_entries)

    @property
    def n_tensors(self) -> int:
        return sum(1 for _, t in self.entries if isinstance(t, TensorRef))

    def by_dtype(self) -> Counter:
        c: Counter = Counter()
        for _, t in self.entries:
            if isinstance(t, TensorRef):
                c[t.dtype.name] += t.numel
        return c


@dataclass
class OptimizerInfo:
    path: tuple
    value: dict
    type_name: str
    groups: list[dict]                  # hyperparameters per group, without "params"
    param_ids: list[Any]                # in group order
    n_states: int
    param_names: dict[Any, str] = field(default_factory=dict)   # id -> parameter name
    names_inferred: bool = False
    names_from: tuple | None = None     # path of the state_dict the names came from
    names_note: str = ""                # why ids were left as ids

    @property
    def label(self) -> str:
        g = self.groups[0] if self.groups else {}
        extra = ""
        if self.type_name == "SGD" and _nonzero(g.get("momentum")):
            extra = " with momentum" + (" (Nesterov)" if g.get("nesterov") else "")
        return f"{self.type_name} optimizer{extra}"


@dataclass
class ProgramInfo:
    """A torch.export program or an AOTInductor compiled model a .pt2 archive holds."""

    path: tuple
    kind: str                           # PROGRAM_TYPES' label
    weights: int                        # tensors in its state_dict (or a compiled model's constants)
    constants: int
    inputs: list[str]                   # user inputs, as the signature describes them
    outputs: int


@dataclass
class Analysis:
    state_dicts: list[StateDictInfo] = field(default_factory=list)
    programs: list[ProgramInfo] = field(default_factory=list)
    optimizers: list[OptimizerInfo] = field(default_factory=list)
    schedulers: list[tuple[tuple, str]] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    roles: dict[tuple, str] = field(default_factory=dict)     # path -> "state_dict" | "optimizer" | ...
    summary: str = ""

    def role_of(self, path: tuple) -> str | None:
        return self.roles.get(tuple(path))

    def state_dict_at(self, path: tuple) -> StateDictInfo | None:
        for sd in self.state_dicts:
            if sd.path == tuple(path):
                return sd
        return None

    def optimizer_at(self, path: tuple) -> OptimizerInfo | None:
        for opt in self.optimizers:
            if opt.path == tuple(path):
                return opt
        return None


def _nonzero(x: Any) -> bool:
    try:
        return float(x) != 0.0
    except (TypeError, ValueError):
        return False


def is_probable_buffer(name: str, t: TensorRef) -> bool:
    """Buffers are not parameters: BatchNorm statistics, and anything not floating point (quantized
    weights are parameters: their integers stand for floats)."""
    last = name.rsplit(".", 1)[-1]
    return last in BUFFER_NAMES or not (t.dtype.is_floating or t.dtype.is_complex or t.dtype.kind == "quantized")


def _module_parameters(module: Any) -> list[tuple[str, TensorRef]]:
    """``named_parameters()`` order: each module's parameters, then its children; tied ones once."""
    seen, out = set(), []
    todo = [("", module, ())]
    while todo:
        prefix, mod, anc = todo.pop()
        attrs = module_attrs(mod)
        if attrs is None or id(mod) in anc:
            continue
        for name, p in attrs["_parameters"].items():
            if isinstance(p, TensorRef) and id(p) not in seen:
                seen.add(id(p))
                out.append((prefix + name, p))
        todo.extend(reversed([(f"{prefix}{n}.", m, anc + (id(mod),))
                              for n, m in attrs["_modules"].items() if m is not None]))
    return out


# -- recognisers -------------------------------------------------------------------------------------
def is_state_dict(value: Any) -> bool:
    if not isinstance(value, dict) or not value:
        return False
    n_tensors = 0
    for k, v in value.items():
        if not isinstance(k, str):
            return False
        if isinstance(v, TensorRef):
            n_tensors += 1
        elif not k.endswith("_extra_state"):
            return False
    return n_tensors > 0


def is_optimizer_state(value: Any) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("state"), dict)
            and isinstance(value.get("param_groups"), list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in value["param_groups"]))


def is_scheduler_state(value: Any) -> bool:
    return isinstance(value, dict) and ("last_epoch" in value and ("base_lrs" in value or "_step_count" in value))


def optimizer_type(groups: list[dict], state: dict) -> str:
    keys = set().union(*(g.keys() for g in groups)) if groups else set()
    state_keys: set = set()
    for s in list(state.values())[:50]:
        if isinstance(s, dict):
            state_keys.update(s.keys())
    if "max_iter" in keys and "history_size" in keys:
        return "LBFGS"
    if "etas" in keys and "step_sizes" in keys:
        return "Rprop"
    if "lambd" in keys and "t0" in keys:
        return "ASGD"
    if "lr_decay" in keys or "sum" in state_keys:
        return "Adagrad"
    if "rho" in keys or "acc_delta" in state_keys:
        return "Adadelta"
    if "momentum_decay" in keys or "mu_product" in state_keys:
        return "NAdam"
    if "exp_inf" in state_keys:
        return "Adamax"
    if "alpha" in keys and "centered" in keys or "square_avg" in state_keys:
        return "RMSprop"
    if "betas" in keys:
        if "amsgrad" in keys:
            if "decoupled_weight_decay" in keys:
                return "AdamW" if any(g.get("decoupled_weight_decay") for g in groups) else "Adam"
            # Before torch 2.6 the two differ only in AdamW's default weight_decay of 0.01.
            wd = [g.get("weight_decay") for g in groups]
            return "AdamW" if any(_nonzero(w) and abs(float(w) - 0.01) < 1e-12 for w in wd) else "Adam"
        if "weight_decay" not in keys:
            return "SparseAdam"
        return "RAdam" if "decoupled_weight_decay" in keys else "Adamax"
    if "momentum" in keys and "dampening" in keys or "momentum_buffer" in state_keys:
        return "SGD"
    return "optimizer"


# -- analysis -----------------------------------------------------------------------------------------
def analyze(root: Any) -> Analysis:
    """Find the state_dicts, optimizers and modules under ``root`` and summarise the file in a line."""
    an = Analysis()
    todo: list[tuple[tuple, Any]] = [((), root)]
    seen: set[int] = set()
    while todo and len(seen) < MAX_CONTAINERS:
        path, value = todo.pop(0)
        value = unwrap(value)
        if id(value) in seen or len(path) > MAX_ROLE_DEPTH:
            continue
        if isinstance(value, (dict, list, tuple, StandIn)):
            seen.add(id(value))
        if isinstance(value, PickledDict) and value.type_name in PROGRAM_TYPES:
            _program(an, path, value)
            continue
        if is_optimizer_state(value):
            an.optimizers.append(_optimizer_info(path, value))
            an.roles[path] = "optimizer"
            continue
        if is_state_dict(value):
            entries = [(k, v) for k, v in value.items() if isinstance(v, TensorRef)]
            an.state_dicts.append(StateDictInfo(path, entries))
            an.roles[path] = "state_dict"
            continue
        attrs = module_attrs(value)
        if attrs is not None:
            info = StateDictInfo(path, module_state_dict(value), kind="module", class_name=value.qualname)
            info.module = value
            an.state_dicts.append(info)
            an.roles[path] = "module"
            continue
        if isinstance(value, StandIn) and value.qualname.startswith("__torch__.") and value.attributes is not None:
            from .walk import iter_tensors
            entries = [(".".join(str(k) for k in p), t) for p, t in iter_tensors(value)]
            info = StateDictInfo(path, entries, kind="script", class_name=value.qualname)
            an.state_dicts.append(info)
            an.roles[path] = "script"
            continue
        if is_scheduler_state(value):
            an.schedulers.append((path, "learning-rate scheduler"))
            an.roles[path] = "scheduler"
            continue
        if isinstance(value, dict):
            todo.extend((path + (k,), v) for k, v in value.items() if _worth_visiting(v))
        elif isinstance(value, (list, tuple)):
            todo.extend((path + (i,), v) for i, v in enumerate(value) if _worth_visiting(v))
        elif isinstance(value, StandIn):
            from .walk import stand_in_children
            todo.extend((path + (k,), v) for k, v in stand_in_children(value) if _worth_visiting(v))
    for sd in an.state_dicts:
        sd.prefix, sd.shared_prefix = detect_prefix([name for name, _ in sd.entries])
    for opt in an.optimizers:
        _map_parameter_names(opt, an.state_dicts)
    if isinstance(root, dict):
        for k in TRAINING_KEYS:
            v = unwrap(root.get(k))
            if isinstance(v, (int, float)) and not isinstance(v, bool) or _is_numpy_scalar(v):
                an.training[k] = v.item() if hasattr(v, "item") else v
            elif isinstance(v, TensorRef) and v.numel == 1:
                an.training[k] = v
    an.summary = summarize(an, root)
    return an


# Type names the .pt2 reader gives its program dicts (they are not objects torch builds).
PROGRAM_TYPES = {"torch.export.ExportedProgram": "torch.export program",
                 "torch._inductor.AOTICompiledModel": "AOTInductor compiled model"}


def _program(an: Analysis, path: tuple, value: PickledDict) -> None:
    """A program: its weights are a state_dict (what ExportedProgram.state_dict holds); its constants,
    signature and sample inputs are not models."""
    an.roles[path] = "program"
    label = PROGRAM_TYPES[value.type_name]
    key = "state_dict" if "state_dict" in value else "constants"
    weights = value.get(key)
    n_weights = 0
    if is_state_dict(weights):
        entries = [(k, v) for k, v in weights.items() if isinstance(v, TensorRef)]
        an.state_dicts.append(StateDictInfo(path + (key,), entries, kinds_known=True))
        an.roles[path + (key,)] = "state_dict"
        n_weights = len(entries)
    constants = value.get("constants") if key == "state_dict" else None
    n_constants = len(constants) if isinstance(constants, dict) else 0
    sig = value.get("signature") if isinstance(value.get("signature"), dict) else {}
    inputs = sig.get("inputs") if isinstance(sig.get("inputs"), dict) else {}
    users = [f"{k} {v.split(': ', 1)[-1]}" for k, v in inputs.items()
             if isinstance(v, str) and v.startswith("user input")]
    outputs = sig.get("outputs")
    an.programs.append(ProgramInfo(path, label, n_weights, n_constants, users,
                                   len(outputs) if isinstance(outputs, (dict, list)) else 0))


def program_facts(value: Any) -> list[tuple[str, str]]:
    """(label, text) rows describing a .pt2 program or compiled model: its inputs and outputs."""
    if not (isinstance(value, PickledDict) and value.type_name in PROGRAM_TYPES):
        return []
    rows = [("Program", PROGRAM_TYPES[value.type_name] + " (read from the archive's JSON; nothing was run)")]
    sig = value.get("signature") if isinstance(value.get("signature"), dict) else {}
    for key, label in (("inputs", "Inputs"), ("outputs", "Outputs")):
        items = sig.get(key)
        if isinstance(items, dict) and items:
            lines = [f"{k}: {v}" for k, v in list(items.items())[:40]]
            if len(items) > 40:
                lines.append(f"… {len(items) - 40:,} more")
            rows.append((label, "\n".join(lines)))
        elif isinstance(items, list) and items:
            rows.append((label, ", ".join(str(x) for x in items[:40])))
    ranges = sig.get("range_constraints")
    if isinstance(ranges, dict) and ranges:
        rows.append(("Dynamic sizes", ", ".join(f"{k} in {v}" for k, v in list(ranges.items())[:20])))
    return rows


def _is_numpy_scalar(v: Any) -> bool:
    from ..util.lazynp import is_generic
    return is_generic(v) and v.dtype.kind in "iuf"


def _worth_visiting(v: Any) -> bool:
    return isinstance(unwrap(v), (dict, list, tuple, StandIn))


def detect_prefix(keys: list[str]) -> tuple[tuple[str, str] | None, str | None]:
    """A wrapper prefix every key carries (``module.``, ``_orig_mod.``, nested ones), or a shared first part."""
    if not keys:
        return None, None
    found, rest = "", keys
    labels = []
    changed = True
    while changed:
        changed = False
        for prefix, label in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in rest):
                found += prefix
                labels.append(label)
                rest = [k[len(prefix):] for k in rest]
                changed = True
    wrapper = (found, " + ".join(labels)) if found else None
    shared = None
    if len(rest) > 1:
        first = {k.split(".", 1)[0] for k in rest}
        if len(first) == 1 and all("." in k for k in rest):
            shared = next(iter(first)) + "."
    return wrapper, shared


def _optimizer_info(path: tuple, value: dict) -> OptimizerInfo:
    groups = [{k: v for k, v in g.items() if k not in ("params", "param_names")} for g in value["param_groups"]]
    ids = [pid for g in value["param_groups"] for pid in g["params"]]
    info = OptimizerInfo(path, value, optimizer_type(groups, value["state"]), groups, ids, len(value["state"]))
    names = [n for g in value["param_groups"] for n in (g.get("param_names") or [])]
    if names and len(names) == len(ids):
        info.param_names = dict(zip(ids, (str(n) for n in names)))
        info.names_note = "from param_names saved in the file"
    return info


def _shapes_agree(opt: OptimizerInfo, params: list[tuple[str, TensorRef]]) -> bool:
    state = opt.value["state"]
    for pid, (_, p) in zip(opt.param_ids, params):
        entry = state.get(pid)
        if not isinstance(entry, dict):
            continue
        for v in entry.values():
            if isinstance(v, TensorRef) and v.shape and v.shape != p.shape:
                return False
    return True


def _stem(path: tuple) -> str:
    last = str(path[-1]) if path else ""
    return re.sub(r"(?i)(optimizer|optim|opt|model|net|network|state_dict|states|state|_|-)", "", last)


def _map_parameter_names(opt: OptimizerInfo, state_dicts: list[StateDictInfo]) -> None:
    if opt.param_names:
        return
    good = []
    for sd in state_dicts:
        params = sd.parameter_entries
        if len(params) == len(opt.param_ids) and _shapes_agree(opt, params):
            good.append((sd, params))
    if len(good) > 1:
        same = [g for g in good if _stem(g[0].path) == _stem(opt.path)]
        good = same if len(same) == 1 else good
    if len(good) == 1:
        sd, params = good[0]
        opt.param_names = {pid: name for pid, (name, _) in zip(opt.param_ids, params)}
        opt.names_inferred = True
        opt.names_from = sd.path
        opt.names_note = (f"inferred from {'/'.join(map(str, sd.path)) or 'the model'}: ids follow "
                          f"model.parameters() order")
    elif not good:
        opt.names_note = ("no model in the file has the same number of parameters with matching shapes; "
                          "ids are shown as saved")
    else:
        opt.names_note = "several models in the file match; ids are shown as saved"


def _fmt_num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _path_label(path: tuple) -> str:
    return "/".join(str(p) for p in path) if path else "root"


def summarize(an: Analysis, root: Any) -> str:
    if an.programs:
        return _summarize_programs(an)
    parts: list[str] = []
    models = an.state_dicts
    if an.training or (isinstance(root, dict) and models and an.optimizers):
        head = "training checkpoint"
        facts = []
        for k in ("epoch", "epochs", "n_epoch", "global_step", "step", "iteration"):
            if k in an.training and not isinstance(an.training[k], TensorRef):
                facts.append(f"{k.replace('n_epoch', 'epoch')} {_fmt_num(an.training[k])}")
                break
        parts.append(head + (": " + facts[0] if facts else ""))
    if len(models) == 1:
        sd = models[0]
        if sd.kind == "module":
            attrs = len(module_attribute_tensors(sd.module))
            parts.append(f"pickled module {sd.class_name} with {sd.n_parameters:,} parameters"
                         + (f" and {counted(attrs, 'tensor')} held as attributes outside its state_dict"
                            if attrs else ""))
        elif sd.kind == "script":
            parts.append(f"TorchScript module {sd.class_name.removeprefix('__torch__.')} with "
                         f"{sd.n_parameters:,} parameters")
        elif not parts and not an.optimizers:
            parts.append(f"state_dict: {counted(sd.n_tensors, 'tensor')}, {counted(sd.n_parameters, 'parameter')}")
        else:
            parts.append(f"model {sd.n_parameters:,} parameters")
    elif len(models) > 1:
        listed = ", ".join(f"{_path_label(sd.path)} {sd.n_parameters:,}" for sd in models[:4])
        more = f", +{len(models) - 4} more" if len(models) > 4 else ""
        parts.append(f"{len(models)} models ({listed}{more} parameters)")
    if len(an.optimizers) == 1 and not parts:
        opt = an.optimizers[0]
        g = opt.groups[0] if opt.groups else {}
        lr = f", lr {_fmt_num(g['lr'])}" if "lr" in g and not isinstance(g["lr"], TensorRef) else ""
        parts.append(f"{opt.label}: {opt.n_states} parameter states, {len(opt.groups)} param group"
                     f"{'s' if len(opt.groups) != 1 else ''}{lr}")
    elif an.optimizers:
        parts.append(", ".join(opt.label for opt in an.optimizers))
    if an.schedulers:
        parts.append(f"{len(an.schedulers)} scheduler state{'s' if len(an.schedulers) > 1 else ''}")
    for sd in models:
        if sd.prefix:
            parts.append(f"keys start with '{sd.prefix[0]}' ({sd.prefix[1]})")
            break
    return "; ".join(parts) if parts else _describe_plain(root)


def _summarize_programs(an: Analysis) -> str:
    parts = []
    for prog in an.programs[:4]:
        sd = an.state_dict_at(prog.path + ("state_dict",)) or an.state_dict_at(prog.path + ("constants",))
        params = f", {counted(sd.n_parameters, 'parameter')}" if sd is not None else ""
        text = f"{prog.kind} {_path_label(prog.path)}: {counted(prog.weights, 'weight')}{params}"
        if prog.constants:
            text += f", {counted(prog.constants, 'constant')}"
        if prog.inputs:
            text += f"; input{'s' if len(prog.inputs) != 1 else ''} {', '.join(prog.inputs[:3])}"
            text += f" (+{len(prog.inputs) - 3})" if len(prog.inputs) > 3 else ""
        if prog.outputs:
            text += f"; {counted(prog.outputs, 'output')}"
        parts.append(text)
    if len(an.programs) > 4:
        parts.append(f"+{len(an.programs) - 4} more")
    return "; ".join(parts)


def _describe_plain(root: Any) -> str:
    root = unwrap(root)
    if isinstance(root, TensorRef):
        return f"a single tensor {root.dtype.name} {list(root.shape)}"
    if isinstance(root, dict):
        return f"a mapping of {len(root)} entries"
    if isinstance(root, (list, tuple)):
        return f"a {type(root).__name__} of {len(root)} items"
    if isinstance(root, StandIn):
        return f"a pickled {root.qualname} object"
    return f"a {type(root).__name__} value"
