"""Warm starts: will this state_dict load into that model, and which renames would make more of it fit?

``compare(source, target)`` reports what ``model.load_state_dict(source, strict=False)`` would: keys
that load (``matched``), ``missing_keys`` (the model has them, the state_dict does not) and
``unexpected_keys`` (the other way round), in torch's order, plus the keys whose shapes differ (torch
raises on those even with ``strict=False``); ``check_keys`` gives the counts RetinaFace-style loaders
print (missing, unused checkpoint keys, used keys; none used means nothing would load).
``suggest(report)`` proposes renames (a prefix added, removed or replaced, a known renaming such as
``gamma`` -> ``weight`` or torch >= 2.1's weight_norm names, or a key whose shape matches exactly one
missing key) that the user can accept one at a time; each suggestion is a rename rule usable with
:class:`ops.Rename`. ``plan_fit`` accepts the best suggestions in turn and then drops what still would
not load (unexpected keys and keys of another shape: a fine-tune with a new classifier head), which is
what ``convert --fit-to`` and the window's Fit button do; ``pick_state_dict`` finds the state_dict of a
file (a training checkpoint's model) the way both sides of a check need it.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..edit.ops import Drop, Rename, SelectModel, apply_rules, rule_text
from ..model import keypath
from ..model.tensor import TensorRef
from ..model.walk import module_attrs, module_state_dict, unwrap
from ..util.errors import OperationError
from ..util.textsafe import key_text
from ..util.units import shape_text

# Renamings that come up again and again between checkpoints and models, each as a rule; suggested when
# it would make more keys match.
KNOWN_RENAMES: list[tuple[tuple, str]] = [
    (("regex", r"(^|\.)(module|_orig_mod|_fsdp_wrapped_module|_checkpoint_wrapped_module)\.", r"\1"),
     "remove wrapper components (module., _orig_mod., _fsdp_wrapped_module., ...) inside keys"),
    (("regex", r"(^|\.)gamma$", r"\1weight"), "rename gamma to weight (TensorFlow-style normalisation names)"),
    (("regex", r"(^|\.)beta$", r"\1bias"), "rename beta to bias (TensorFlow-style normalisation names)"),
    (("regex", r"(^|\.)weight_g$", r"\1parametrizations.weight.original0"),
     "weight_norm's weight_g to parametrizations.weight.original0 (torch >= 2.1)"),
    (("regex", r"(^|\.)weight_v$", r"\1parametrizations.weight.original1"),
     "weight_norm's weight_v to parametrizations.weight.original1 (torch >= 2.1)"),
    (("regex", r"(^|\.)parametrizations\.weight\.original0$", r"\1weight_g"),
     "parametrizations.weight.original0 to weight_norm's weight_g (torch < 2.1)"),
    (("regex", r"(^|\.)parametrizations\.weight\.original1$", r"\1weight_v"),
     "parametrizations.weight.original1 to weight_norm's weight_v (torch < 2.1)"),
]


@dataclass
class WarmStartReport:
    matched: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple, tuple]] = field(default_factory=list)   # key, source, target
    source_shapes: dict[str, tuple] = field(default_factory=dict)
    target_shapes: dict[str, tuple] = field(default_factory=dict)

    @property
    def loads_strictly(self) -> bool:
        return not (self.missing_keys or self.unexpected_keys or self.shape_mismatches)

    def check_keys(self) -> dict[str, int]:
        """The counts a RetinaFace-style ``check_keys`` prints: keys the model lacks in the checkpoint
        (missing), checkpoint keys the model does not have (unused) and keys in both (used)."""
        used = len(self.matched) + len(self.shape_mismatches)
        return {"missing": len(self.missing_keys), "unused": len(self.unexpected_keys), "used": used}

    def summary(self) -> str:
        parts = [f"{len(self.matched)} of {len(self.target_shapes)} target keys match"]
        if self.missing_keys:
            parts.append(f"{len(self.missing_keys)} missing")
        if self.unexpected_keys:
            parts.append(f"{len(self.unexpected_keys)} unexpected")
        if self.shape_mismatches:
            parts.append(f"{len(self.shape_mismatches)} with another shape (load_state_dict raises on these)")
        return "; ".join(parts)


@dataclass(frozen=True)
class Suggestion:
    rule: tuple          # a rename rule: ("add_prefix", p), ("remove_prefix", p), ("regex", ...), ("map", {...})
    gain: int            # how many more keys would match
    reason: str


def _shapes(sd: dict) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in sd.items() if isinstance(k, str) and isinstance(v, TensorRef)}


def compare(source: dict, target: dict) -> WarmStartReport:
    """What loading ``source`` into a model whose state_dict is ``target`` would do (strict=False)."""
    src, tgt = _shapes(source), _shapes(target)
    rep = WarmStartReport(source_shapes=src, target_shapes=tgt)
    for k, shape in tgt.items():            # torch lists missing keys in the model's order
        if k not in src:
            rep.missing_keys.append(k)
        elif src[k] != shape:
            rep.shape_mismatches.append((k, src[k], shape))
        else:
            rep.matched.append(k)
    rep.unexpected_keys = [k for k in src if k not in tgt]
    return rep


def suggest(report: WarmStartReport, limit: int = 10) -> list[Suggestion]:
    """Renames that would turn unexpected keys into missing ones, best first."""
    missing, unexpected = set(report.missing_keys), list(report.unexpected_keys)
    if not missing or not unexpected:
        return []
    candidates: Counter = Counter()
    unexpected_set = set(unexpected)
    missing_by_rest: dict[str, list[str]] = {}
    for m in missing:
        head, dot, rest = m.partition(".")
        if dot:
            missing_by_rest.setdefault(rest, []).append(head)
    for u in unexpected:                      # u = PREFIX + m  ->  remove PREFIX
        for i, ch in enumerate(u):
            if ch == "." and u[i + 1:] in missing:
                candidates[("remove_prefix", u[: i + 1])] += 1
        head, dot, rest = u.partition(".")  # u = A.rest, m = B.rest  ->  replace leading A. with B.
        if dot:
            for other in missing_by_rest.get(rest, []):
                if other != head:
                    candidates[("replace_first", head + ".", other + ".")] += 1
    for m in missing:                         # m = PREFIX + u  ->  add PREFIX
        for j, ch in enumerate(m):
            if ch == "." and m[j + 1:] in unexpected_set:
                candidates[("add_prefix", m[: j + 1])] += 1
    out: list[Suggestion] = []
    for cand, _ in candidates.most_common(20):
        rule = _as_rule(cand)
        gain = _gain(report, rule)
        if gain > 0:
            out.append(Suggestion(rule, gain, _describe(cand, gain)))
    for rule, what in KNOWN_RENAMES:
        if any(re.search(rule[1], k) for k in unexpected[:5000]):
            gain = _gain(report, rule)
            if gain > 0:
                out.append(Suggestion(rule, gain, f"{what}: {gain} more key{'s' if gain != 1 else ''} would match"))
    # A key whose shape is unique on both sides pairs up with the missing key of that shape.
    by_shape_u: dict[tuple, list[str]] = {}
    by_shape_m: dict[tuple, list[str]] = {}
    for u in unexpected:
        by_shape_u.setdefault(report.source_shapes[u], []).append(u)
    for m in report.missing_keys:
        by_shape_m.setdefault(report.target_shapes[m], []).append(m)
    prefix_rules = [s.rule for s in out]
    for shape, us in by_shape_u.items():
        ms = by_shape_m.get(shape, [])
        if len(us) == 1 and len(ms) == 1 and not any(apply_rules(us[0], (r,)) == ms[0] for r in prefix_rules):
            out.append(Suggestion(("map", {us[0]: ms[0]}), 1,
                                  f"{us[0]} -> {ms[0]}: the only unexpected and missing keys of shape {list(shape)}"))
    out.sort(key=lambda s: -s.gain)
    return _dedupe(out, list(report.source_shapes))[:limit]


def _as_rule(cand: tuple) -> tuple:
    if cand[0] == "replace_first":
        import re
        return ("regex", "^" + re.escape(cand[1]), cand[2].replace("\\", "\\\\"))
    return cand


def _describe(cand: tuple, gain: int) -> str:
    keys = f"{gain} more key{'s' if gain != 1 else ''} would match"
    if cand[0] == "remove_prefix":
        return f"remove prefix {cand[1]!r}: {keys}"
    if cand[0] == "add_prefix":
        return f"add prefix {cand[1]!r}: {keys}"
    return f"replace leading {cand[1]!r} with {cand[2]!r}: {keys}"


def _gain(report: WarmStartReport, rule: tuple) -> int:
    """Net change in matched keys if ``rule`` were applied to the source keys."""
    renamed = {apply_rules(k, (rule,)): shape for k, shape in report.source_shapes.items()}
    if len(renamed) < len(report.source_shapes):
        return 0   # the rule would merge keys
    now = sum(1 for k, s in renamed.items() if report.target_shapes.get(k) == s)
    return now - len(report.matched)


def _dedupe(items: list[Suggestion], keys: list[str]) -> list[Suggestion]:
    """Suggestions that rename the keys differently (the first of those with one effect stays)."""
    seen, out = set(), []
    for s in items:
        effect = repr(s.rule) if s.rule[0] == "map" else tuple(apply_rules(k, (s.rule,)) for k in keys)
        if effect not in seen:
            seen.add(effect)
            out.append(s)
    return out


def accept(source: dict, suggestion: Suggestion) -> dict[str, Any]:
    """The source state_dict with one suggestion applied (for previews; edits go through ops.Rename)."""
    return {apply_rules(k, (suggestion.rule,)) if isinstance(k, str) else k: v for k, v in source.items()}


# -- choosing the state_dicts ----------------------------------------------------------------------------
def pick_state_dict(root: Any, select: str | None = None) -> tuple[tuple, dict[str, TensorRef], str]:
    """(key path, name -> tensor, how it was chosen) of the state_dict to check in a file: the one
    ``select`` names, or the model's weights (the only state_dict or pickled module, else the one
    ``SelectModel`` prefers); a pickled module gives its state_dict."""
    if select:
        path, value = keypath.resolve(root, select)
        note = f"{keypath.format_path(path) or 'the root'}, as asked"
    else:
        try:
            chosen, why = SelectModel().choose(root)
        except OperationError:
            raise OperationError("the file holds no state_dict or pickled module to compare",
                                 hint="Name the entry with --select PATH (see `ckptviewer info FILE`).") from None
        path = tuple(chosen.path)
        value = unwrap(keypath.resolve(root, path)[1]) if path else unwrap(root)
        note = f"{keypath.format_path(path)} ({why})" if path else "the file itself"
    if module_attrs(value) is not None:
        return path, dict(module_state_dict(value)), note + "; the state_dict of a pickled module"
    if not isinstance(value, dict) or not any(isinstance(v, TensorRef) for v in value.values()):
        raise OperationError(f"{keypath.format_path(path) or 'the root'} is not a state_dict (a mapping of names "
                             f"to tensors)", hint="Name one with --select PATH (see `ckptviewer info FILE`).")
    return path, {k: v for k, v in value.items() if isinstance(v, TensorRef)}, note


# -- fitting -------------------------------------------------------------------------------------------
@dataclass
class FitPlan:
    """What fitting a state_dict to a model does: renames accepted in turn, then keys dropped."""

    before: WarmStartReport
    renames: list[Suggestion]
    after: WarmStartReport                       # once renamed (before the drops)
    drop_unexpected: list[str]                   # keys (renamed) the model does not have
    drop_shape: list[tuple[str, tuple, tuple]]   # keys (renamed) whose shape differs: key, here, target

    @property
    def still_missing(self) -> list[str]:
        """Keys the model has and the fitted state_dict will not (those never there and those dropped for
        their shape), in the model's order: load with strict=False."""
        gone = set(self.after.missing_keys) | {k for k, _, _ in self.drop_shape}
        return [k for k in self.after.target_shapes if k in gone]

    def steps(self, at: tuple) -> list:
        """Edit steps doing the fit on the state_dict at key path ``at`` (the root when empty)."""
        where = keypath.format_path(at) if at else None
        out: list = []
        if self.renames:
            out.append(Rename(tuple(s.rule for s in self.renames), where))
        drops = self.drop_unexpected + [k for k, _, _ in self.drop_shape]
        if drops:
            out.append(Drop(tuple(keypath.format_path(tuple(at) + (k,)) for k in drops)))
        return out

    def describe(self) -> list[str]:
        lines = [f"rename: {rule_text(s.rule)} ({s.gain} more key{'s' if s.gain != 1 else ''} match)"
                 for s in self.renames]
        if self.drop_unexpected:
            n = len(self.drop_unexpected)
            lines.append(f"drop {n} unexpected key{'s' if n != 1 else ''}: " + _listed(self.drop_unexpected))
        if self.drop_shape:
            n = len(self.drop_shape)
            shapes = [f"{k} {shape_text(a)} (the model: {shape_text(b)})" for k, a, b in self.drop_shape]
            lines.append(f"drop {n} key{'s' if n != 1 else ''} of another shape: " + _listed(shapes))
        n = len(self.still_missing)
        lines.append(f"{n} key{'s' if n != 1 else ''} of the model stay missing"
                     + (f" (load with strict=False; they keep their initial values): {_listed(self.still_missing)}"
                        if n else ": the result loads with load_state_dict(strict=True)"))
        return lines


def _listed(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(key_text(k) for k in items[:limit])
    return shown + (f", and {len(items) - limit} more" if len(items) > limit else "")


def plan_fit(source: dict, target: dict, max_renames: int = 10) -> FitPlan:
    """Accept the best rename suggestion while one makes more keys match, then drop what would not load."""
    before = compare(source, target)
    sd, renames = source, []
    rep = before
    for _ in range(max_renames):
        suggestions = suggest(rep)
        if not suggestions or suggestions[0].gain <= 0:
            break
        renames.append(suggestions[0])
        sd = accept(sd, suggestions[0])
        rep = compare(sd, target)
    return FitPlan(before, renames, rep, list(rep.unexpected_keys), list(rep.shape_mismatches))


def fit_root(root: Any, target: dict) -> tuple[Any, FitPlan, list[str]]:
    """Fit the model weights under ``root`` to ``target`` (a model's state_dict): the result is the
    state_dict alone (what ``load_state_dict`` takes), renamed and with what would not load dropped.
    Returns (the new root, the plan, what the steps did in words)."""
    from ..edit.ops import Select, apply_steps
    path, sd, note = pick_state_dict(root)
    lines = []
    if path or module_attrs(unwrap(root)) is not None:
        root, log = apply_steps(root, [Select(keypath.format_path(path))])
        lines.append(f"selected {note}: the state_dict to fit")
    plan = plan_fit(sd, target)
    root, log = apply_steps(root, plan.steps(()))
    return root, plan, lines + log.lines


def report_json(report: WarmStartReport, suggestions: list[Suggestion], fit: FitPlan | None = None) -> dict:
    """The ``warmstart --json`` object: ``missing``, ``unexpected`` and ``shape_mismatch`` entries, each
    ``{"key", "source", "target"}`` (shapes, null where a side lacks the key), and ``renames``."""
    def entry(k: str) -> dict:
        src, tgt = report.source_shapes.get(k), report.target_shapes.get(k)
        return {"key": k, "source": list(src) if src is not None else None,
                "target": list(tgt) if tgt is not None else None}
    out = {
        "loads_strictly": report.loads_strictly,
        "matched": len(report.matched),
        "check_keys": report.check_keys(),
        "missing": [entry(k) for k in report.missing_keys],
        "unexpected": [entry(k) for k in report.unexpected_keys],
        "shape_mismatch": [{"key": k, "source": list(a), "target": list(b)} for k, a, b in report.shape_mismatches],
        "renames": [{"rule": [r if not isinstance(r, dict) else dict(r) for r in s.rule], "gain": s.gain,
                     "reason": s.reason} for s in suggestions],
    }
    if fit is not None:
        out["fit"] = {"renames": [list(s.rule) for s in fit.renames], "drop_unexpected": fit.drop_unexpected,
                      "drop_shape_mismatch": [k for k, _, _ in fit.drop_shape], "still_missing": fit.still_missing}
    return out
