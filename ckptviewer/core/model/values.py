"""The values of tiny tensors: a 0-d loss, a ``num_batches_tracked`` counter, an optimizer's ``step``.

People read these as numbers (``loss: 0.0063``, ``num_batches_tracked 6 -> 15``), not as statistics and a
one-bin histogram. :func:`small_value` reads the few bytes of a tensor with at most ``SMALL_NUMEL``
elements and returns plain Python values (a number for a 0-d tensor, nested lists otherwise);
:func:`value_text` writes them the way torch prints them. Reading is on demand (callers decide when:
``info`` reads what it prints, the window reads in a worker), and a tensor whose bytes are missing has
no value rather than an error.
"""
from __future__ import annotations

import math
import struct
from typing import Any

from ..util.errors import CheckpointError
from .tensor import TensorRef

SMALL_NUMEL = 8          # tensors with at most this many elements show their values inline
_FIXED_RANGE = (1e-4, 1e8)
# One element is decoded with struct, so that reading a 0-d loss or counter does not import numpy (most
# of what ``info --json`` costs on a big file).
_STRUCT = {"float32": "f", "float64": "d", "float16": "e", "int8": "b", "uint8": "B", "int16": "h", "uint16": "H",
           "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q", "bool": "?"}


def is_small(t: TensorRef) -> bool:
    """A tensor whose values are shown inline: at most ``SMALL_NUMEL`` elements, a plain dense tensor."""
    return (0 < t.numel <= SMALL_NUMEL and t.kind in ("tensor", "parameter")
            and t.dtype.kind not in ("bits", "quantized"))


def small_value(t: TensorRef) -> Any:
    """The values of a small tensor as Python numbers (nested lists for ``ndim > 0``), or None when the
    tensor is not small or its bytes cannot be read (``t.problem`` says why)."""
    if not is_small(t) or not t.readable:
        return None
    if t.numel == 1 and t.cast_from is None and (t.dtype.name in _STRUCT or t.dtype.name == "bfloat16"):
        try:
            x = _one_element(t)
        except (CheckpointError, ValueError, struct.error):
            return None
        for _ in t.shape:
            x = [x]
        return x
    try:
        arr = t.read()
    except (CheckpointError, ValueError, OverflowError):
        return None
    if t.dtype.name == "bool":
        arr = arr.astype(bool)
    return arr.tolist()


def _one_element(t: TensorRef) -> Any:
    isz = t.dtype.itemsize
    source = t.storage.source
    try:
        raw = bytes(source.view(t.offset * isz, isz))
    finally:
        source.release(t.offset * isz, isz)
    order = ">" if t.storage.byteorder == "big" else "<"
    if t.dtype.name == "bfloat16":
        return struct.unpack("<f", (int.from_bytes(raw, "big" if order == ">" else "little") << 16)
                             .to_bytes(4, "little"))[0]
    return struct.unpack(order + _STRUCT[t.dtype.name], raw)[0]


def number_text(x: Any) -> str:
    """One number about as torch prints it: integers as they are, whole floats with one decimal (``2.0``),
    other floats with four decimals (``0.0063``) or in scientific notation outside [1e-4, 1e8)
    (``1.2340e-05``), ``True``/``False``, ``nan``, ``inf``."""
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, complex):
        return f"{number_text(x.real)}{'+' if x.imag >= 0 or math.isnan(x.imag) else '-'}{number_text(abs(x.imag))}j"
    if isinstance(x, float):
        if math.isnan(x) or math.isinf(x):
            return str(x)
        if x == int(x) and abs(x) < _FIXED_RANGE[1]:
            return f"{x:.1f}"                  # a whole number stored as a float: 2.0, 15.0
        if _FIXED_RANGE[0] <= abs(x) < _FIXED_RANGE[1]:
            return f"{x:.4f}"
        return f"{x:.4e}"
    return str(x)


def value_text(v: Any) -> str:
    """A small tensor's values (from :func:`small_value`) as text: ``6``, ``0.0063``, ``[1.0000, 2.0000]``."""
    if isinstance(v, list):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    return number_text(v)


def json_number(x: Any) -> Any:
    """A value for JSON: numbers and booleans as they are, complex numbers as [real, imag]."""
    if isinstance(x, complex):
        return [x.real, x.imag]
    if isinstance(x, list):
        return [json_number(v) for v in x]
    return x
