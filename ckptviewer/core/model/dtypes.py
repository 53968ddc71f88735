"""Element types: torch names, storage class names, item sizes, and how to read them with numpy.

One table, so the readers, the statistics and the writers agree. ``DType.numpy`` is the numpy dtype
of the raw little-endian elements (for hashing and copying); ``to_float`` turns raw elements of the
types numpy lacks (bfloat16, the float8 family, complex32) into numbers for statistics.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..util.lazynp import np


@dataclass(frozen=True)
class DType:
    name: str                 # torch's name without "torch.": "float32", "bfloat16", "float8_e4m3fn"
    itemsize: int             # bytes per element (packed sub-byte types count their container byte)
    raw: str                  # numpy dtype string for the raw little-endian element, e.g. "<f4", "<u2"
    kind: str                 # "float", "int", "uint", "bool", "complex", "quantized", "bits"
    storage_class: str | None = None   # legacy typed storage class name, e.g. "FloatStorage"
    safetensors: str | None = None     # safetensors dtype code, e.g. "F32"

    @property
    def is_floating(self) -> bool:
        return self.kind == "float"

    @property
    def is_complex(self) -> bool:
        return self.kind == "complex"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.raw)

    @property
    def numpy_native(self) -> bool:
        """True when numpy has the type itself (so the raw view is already the value)."""
        return self.name not in _CONVERTED

    def __str__(self) -> str:
        return self.name


_TABLE = [
    DType("float64", 8, "<f8", "float", "DoubleStorage", "F64"),
    DType("float32", 4, "<f4", "float", "FloatStorage", "F32"),
    DType("float16", 2, "<f2", "float", "HalfStorage", "F16"),
    DType("bfloat16", 2, "<u2", "float", "BFloat16Storage", "BF16"),
    DType("float8_e4m3fn", 1, "u1", "float", None, "F8_E4M3"),
    DType("float8_e5m2", 1, "u1", "float", None, "F8_E5M2"),
    DType("float8_e4m3fnuz", 1, "u1", "float", None, None),
    DType("float8_e5m2fnuz", 1, "u1", "float", None, None),
    DType("float8_e8m0fnu", 1, "u1", "float", None, "F8_E8M0"),
    DType("int64", 8, "<i8", "int", "LongStorage", "I64"),
    DType("int32", 4, "<i4", "int", "IntStorage", "I32"),
    DType("int16", 2, "<i2", "int", "ShortStorage", "I16"),
    DType("int8", 1, "i1", "int", "CharStorage", "I8"),
    DType("uint8", 1, "u1", "uint", "ByteStorage", "U8"),
    DType("uint16", 2, "<u2", "uint", None, "U16"),
    DType("uint32", 4, "<u4", "uint", None, "U32"),
    DType("uint64", 8, "<u8", "uint", None, "U64"),
    DType("bool", 1, "?", "bool", "BoolStorage", "BOOL"),
    DType("complex128", 16, "<c16", "complex", "ComplexDoubleStorage", "C128"),
    DType("complex64", 8, "<c8", "complex", "ComplexFloatStorage", "C64"),
    DType("complex32", 4, "<u4", "complex", None, None),
    DType("qint8", 1, "i1", "quantized", "QInt8Storage"),
    DType("quint8", 1, "u1", "quantized", "QUInt8Storage"),
    DType("qint32", 4, "<i4", "quantized", "QInt32Storage"),
    DType("quint4x2", 1, "u1", "quantized", "QUInt4x2Storage"),
    DType("quint2x4", 1, "u1", "quantized", "QUInt2x4Storage"),
    DType("bits8", 1, "u1", "bits"),
    DType("bits16", 2, "<u2", "bits"),
    DType("bits1x8", 1, "u1", "bits"),
    DType("bits2x4", 1, "u1", "bits"),
    DType("bits4x2", 1, "u1", "bits"),
]
_CONVERTED = {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
              "float8_e8m0fnu", "complex32"}

BY_NAME: dict[str, DType] = {d.name: d for d in _TABLE}
# Aliases torch accepts as attribute names (torch.float, torch.half, torch.long, ...).
_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64", "int": "int32",
            "short": "int16", "cfloat": "complex64", "cdouble": "complex128", "chalf": "complex32"}
BY_STORAGE: dict[str, DType] = {d.storage_class: d for d in _TABLE if d.storage_class}
BY_SAFETENSORS: dict[str, DType] = {d.safetensors: d for d in _TABLE if d.safetensors}
UINT8 = BY_NAME["uint8"]

# numpy dtypes a numpy array in a pickle may carry, mapped to our names (for `.npy`-like values).
_FROM_NUMPY = {"f8": "float64", "f4": "float32", "f2": "float16", "i8": "int64", "i4": "int32", "i2": "int16",
               "i1": "int8", "u1": "uint8", "u2": "uint16", "u4": "uint32", "u8": "uint64", "b1": "bool",
               "c16": "complex128", "c8": "complex64"}


def by_name(name: str) -> DType | None:
    """Look up a dtype by torch name (``"float32"``, ``"torch.float32"``, or an alias like ``"half"``)."""
    name = name.removeprefix("torch.")
    return BY_NAME.get(_ALIASES.get(name, name))


def from_numpy(dt: np.dtype) -> DType | None:
    dt = np.dtype(dt)
    return BY_NAME.get(_FROM_NUMPY.get(f"{dt.kind}{dt.itemsize}", ""))


@lru_cache(maxsize=None)
def _fp8_table(name: str) -> np.ndarray:
    """float32 value of each of the 256 bytes of a float8 format (its published bit layout)."""
    codes = np.arange(256, dtype=np.uint32)
    if name == "float8_e5m2":
        # e5m2 is the upper byte of an IEEE float16.
        return (codes.astype(np.uint16) << 8).view(np.float16).astype(np.float32)
    if name == "float8_e8m0fnu":
        out = np.ldexp(np.float32(1.0), codes.astype(np.int32) - 127).astype(np.float32)
        out[255] = np.nan
        return out
    exp_bits, man_bits, bias = {"float8_e4m3fn": (4, 3, 7), "float8_e4m3fnuz": (4, 3, 8),
                                "float8_e5m2fnuz": (5, 2, 16)}[name]
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> man_bits) & ((1 << exp_bits) - 1)
    man = codes & ((1 << man_bits) - 1)
    normal = (1.0 + man / (1 << man_bits)) * np.exp2(exp.astype(np.float64) - bias)
    subnormal = (man / (1 << man_bits)) * np.exp2(1.0 - bias)
    out = (sign * np.where(exp == 0, subnormal, normal)).astype(np.float32)
    if name == "float8_e4m3fn":
        out[(codes & 0x7F) == 0x7F] = np.nan          # S.1111.111 is NaN; there is no infinity
    else:                                             # the "fnuz" variants: 0x80 is the only NaN
        out[0x80] = np.nan
    return out


def to_numbers(raw: np.ndarray, dtype: DType) -> np.ndarray:
    """Turn raw elements (as read with ``dtype.raw``) into a numpy array numpy can do math on.

    bfloat16 and float8 become float32, complex32 becomes complex64; other types pass through.
    """
    if dtype.numpy_native:
        return raw
    if dtype.name == "bfloat16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype.name == "complex32":
        halves = raw.view(np.float16).astype(np.float32)
        return halves.view(np.complex64)
    return _fp8_table(dtype.name)[raw]
