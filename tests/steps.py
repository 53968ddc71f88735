"""Driving the step generators the workers run (they yield progress and return their result) from a test,
without a worker thread."""
from __future__ import annotations


def collect(gen):
    """Every value ``gen`` yields, in order, and the value it returns."""
    yielded = []
    try:
        while True:
            yielded.append(next(gen))
    except StopIteration as stop:
        return yielded, stop.value


def drain(gen):
    """The value ``gen`` returns, its yields dropped."""
    return collect(gen)[1]
