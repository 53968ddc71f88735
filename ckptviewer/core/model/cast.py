"""Casting raw tensor elements between float types with numpy, rounding as torch does.

float32 <-> float16 uses numpy's IEEE conversion (round to nearest even, overflow to inf), which is
what ``tensor.to(torch.float16)`` does; NaNs keep their payload with the quiet bit set, as torch's.
bfloat16 is the upper half of a float32: narrowing rounds to nearest even on the dropped 16 bits.
Every NaN becomes the quiet NaN 0x7FC0 (torch's scalar path; its vectorised CPU path writes 0xFFFF:
both are NaN). Widening is exact. Tests compare each path with torch bit for bit, NaNs by position.
"""
from __future__ import annotations

import numpy as np

from .dtypes import BY_NAME, DType, to_numbers

CASTABLE = {"float64", "float32", "float16", "bfloat16"}


def _to_bf16_raw(values: np.ndarray) -> np.ndarray:
    f32 = np.ascontiguousarray(values, dtype=np.float32)
    bits = f32.view(np.uint32)
    rounded = (bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16
    out = rounded.astype(np.uint16)
    out[np.isnan(f32)] = 0x7FC0
    return out


def cast_raw(raw: np.ndarray, src: DType, dst: DType) -> np.ndarray:
    """Raw ``src`` elements (as read with ``src.raw``) converted to raw ``dst`` elements."""
    if src.name == dst.name:
        return raw
    if src.name not in CASTABLE or dst.name not in CASTABLE:
        raise ValueError(f"cannot cast {src.name} to {dst.name}")
    values = to_numbers(raw, src)          # bf16 widened to float32; others as they are
    if dst.name == "bfloat16":
        if values.dtype == np.float64:
            # float64 -> bfloat16 goes through float32 in torch too (one rounding per step).
            values = values.astype(np.float32)
        return _to_bf16_raw(values)
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(np.dtype(dst.raw))
    if dst.name == "float16":
        nan = np.isnan(out)
        if nan.any():
            bits = out.view(np.uint16)
            bits[nan] |= 0x0200            # quiet NaN, payload kept (what torch writes)
    return out


def cast_dtype(name: str) -> DType:
    dt = BY_NAME.get(name.removeprefix("torch."))
    if dt is None or dt.name not in CASTABLE:
        raise ValueError(f"cannot cast to {name!r}; choose one of {', '.join(sorted(CASTABLE))}")
    return dt
