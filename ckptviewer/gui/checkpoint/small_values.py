"""The tab's hook for small tensors: a counter or a 0-d loss is shown as its value, not as statistics.

Selecting a tensor of at most ``values.SMALL_NUMEL`` elements shows its values in the details panel (read
in the tab's "value" worker channel when the tree has not read them yet, and repainted in the tree); a
single-element tensor gets no statistics and no one-bin histogram at all.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...core.model.tree import Node
from ...core.model.values import is_small
from .loading import value_steps

if TYPE_CHECKING:
    from .tab import CheckpointTab

SINGLE_VALUE = "A single value: no histogram."


def start_value(tab: "CheckpointTab", node: Node) -> bool:
    """Show ``node``'s values (reading them in a worker if needed). True when that is all there is to
    show (one element): the caller then starts no statistics."""
    t = node.value
    if not is_small(t):
        return False
    known, _ = node.small_value()
    if not known:
        tab.runner.submit("value", value_steps, node,
                          on_result=lambda value, n=node: _on_value(tab, n, value))
    if t.numel == 1:
        tab.histogram.clear(SINGLE_VALUE)
        return True
    return False


def _on_value(tab: "CheckpointTab", node: Node, value: Any) -> None:
    if tab.model is not None:
        tab.model.mark_totals_ready([node])        # repaint its Value cell
    if tab.current_node() is node:
        tab.details.set_value(value)
