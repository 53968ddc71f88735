"""Warm starts: will this state_dict load into that model, and which renames would make more of it fit?

``compare(source, target)`` reports what ``model.load_state_dict(source, strict=False)`` would: keys
that load (``matched``), ``missing_keys`` (the model has them, the state_dict does not) and
``unexpected_keys`` (the other way round), in torch's order, plus the keys whose shapes differ (torch
raises on those even with ``strict=False``). ``suggest(report)`` proposes renames (a prefix added,
removed or replaced, or a key whose shape matches exactly one missing key) that the user can accept
one at a time; each suggestion is a rename rule usable with :class:`ops.Rename`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..edit.ops import apply_rules
from ..model.tensor import TensorRef


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
    return _dedupe(out)[:limit]


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


def _dedupe(items: list[Suggestion]) -> list[Suggestion]:
    seen, out = set(), []
    for s in items:
        key = repr(s.rule)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def accept(source: dict, suggestion: Suggestion) -> dict[str, Any]:
    """The source state_dict with one suggestion applied (for previews; edits go through ops.Rename)."""
    return {apply_rules(k, (suggestion.rule,)) if isinstance(k, str) else k: v for k, v in source.items()}
