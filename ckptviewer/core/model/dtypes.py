"""Element types: torch names, storage class names, item sizes, and how to read them with numpy.

One table, so the readers, the statistics and the writers agree. ``DType.numpy`` is the numpy dtype
of the raw little-endian elements (for hashing and copying); ``to_numbers`` turns raw elements of the
types numpy lacks (bfloat16, the float8 family, float4, complex32) into numbers for statistics.

Packed and sub-byte types come in three shapes, all in this table:

* ``float4_e2m1fn_x2`` is one byte per torch element holding two FP4 (E2M1) values, low nibble first:
  torch counts bytes, so its shape is the logical one with the last dimension halved (safetensors'
  ``F4`` header states the logical shape). ``to_numbers`` unpacks each byte to two float32 values.
* ``quint4x2`` and ``quint2x4`` pack two or four quantized values per storage byte (``per_byte``):
  torch counts logical elements, and a storage of N bytes holds ``per_byte * N`` of them.
* ``bits*`` are opaque bit containers, ``uint1..7`` / ``int1..7`` hold one value per byte (torch
  cannot save them, but loads a pickle naming them); both read as unsigned or signed bytes.
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
    per_byte: int = 1                  # logical elements packed in one storage byte (quint4x2: 2)
    lanes: int = 1                     # values inside one element (float4_e2m1fn_x2: 2, bits1x8: 8)
    meaning: str = ""                  # what a packed or unusual type holds, for people

    @property
    def values_per_element(self) -> int:
        """Numbers ``to_numbers`` makes from one raw element (2 for packed FP4, else 1)."""
        return self.lanes if self.name in _UNPACKED_BY_TO_NUMBERS else 1

    def storage_bytes(self, numel: int) -> int:
        """Bytes that ``numel`` elements occupy in a storage."""
        if self.per_byte > 1:
            return -(-numel // self.per_byte)
        return numel * self.itemsize

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
    DType("float8_e4m3fnuz", 1, "u1", "float", None, "F8_E4M3FNUZ"),
    DType("float8_e5m2fnuz", 1, "u1", "float", None, "F8_E5M2FNUZ"),
    DType("float8_e8m0fnu", 1, "u1", "float", None, "F8_E8M0",
          meaning="8-bit power-of-two scale 2**(e-127), no sign, no zero (MX block scales)"),
    DType("float4_e2m1fn_x2", 1, "u1", "float", None, "F4", lanes=2,
          meaning="two FP4 (E2M1) values per byte, low nibble first; logical last dimension is twice the shape's"),
    DType("int64", 8, "<i8", "int", "LongStorage", "I64"),
    DType("int32", 4, "<i4", "int", "IntStorage", "I32"),
    DType("int16", 2, "<i2", "int", "ShortStorage", "I16"),
    DType("int8", 1, "i1", "int", "CharStorage", "I8"),
    DType("uint8", 1, "u1", "uint", "ByteStorage", "U8"),
    DType("uint16", 2, "<u2", "uint", None, "U16"),
    DType("uint32", 4, "<u4", "uint", None, "U32"),
    DType("uint64", 8, "<u8", "uint", None, "U64"),
    *(DType(f"uint{n}", 1, "u1", "uint", meaning=f"one {n}-bit unsigned value per byte") for n in range(1, 8)),
    *(DType(f"int{n}", 1, "i1", "int", meaning=f"one {n}-bit signed value per byte") for n in range(1, 8)),
    DType("bool", 1, "?", "bool", "BoolStorage", "BOOL"),
    DType("complex128", 16, "<c16", "complex", "ComplexDoubleStorage", "C128"),
    DType("complex64", 8, "<c8", "complex", "ComplexFloatStorage", "C64"),
    DType("complex32", 4, "<u4", "complex", None, None, meaning="two float16 (real, imaginary) per element"),
    DType("qint8", 1, "i1", "quantized", "QInt8Storage"),
    DType("quint8", 1, "u1", "quantized", "QUInt8Storage"),
    DType("qint32", 4, "<i4", "quantized", "QInt32Storage"),
    DType("quint4x2", 1, "u1", "quantized", "QUInt4x2Storage", per_byte=2,
          meaning="two 4-bit quantized values per storage byte, low nibble first"),
    DType("quint2x4", 1, "u1", "quantized", "QUInt2x4Storage", per_byte=4,
          meaning="four 2-bit quantized values per storage byte, lowest bits first"),
    DType("bits8", 1, "u1", "bits", meaning="8 opaque bits per element"),
    DType("bits16", 2, "<u2", "bits", meaning="16 opaque bits per element"),
    DType("bits1x8", 1, "u1", "bits", lanes=8, meaning="eight 1-bit values per element"),
    DType("bits2x4", 1, "u1", "bits", lanes=4, meaning="four 2-bit values per element"),
    DType("bits4x2", 1, "u1", "bits", lanes=2, meaning="two 4-bit values per element"),
]
_CONVERTED = {"bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
              "float8_e8m0fnu", "float4_e2m1fn_x2", "complex32"}
_UNPACKED_BY_TO_NUMBERS = {"float4_e2m1fn_x2"}
# float32 values of the 16 FP4 E2M1 codes (sign, 2 exponent bits with bias 1, 1 mantissa bit; no inf/NaN).
_FP4_E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)

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
        out = np.ldexp(1.0, codes.astype(np.int32) - 127)       # float64: 2**127 fits, as float32 does
        out[255] = np.nan
        out = out.astype(np.float32)
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
    float4_e2m1fn_x2 becomes two float32 values per byte (low nibble first), so the result has a
    last dimension twice as long (``DType.values_per_element``).
    """
    if dtype.numpy_native:
        return raw
    if dtype.name == "bfloat16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype.name == "complex32":
        halves = raw.view(np.float16).astype(np.float32)
        return halves.view(np.complex64)
    if dtype.name == "float4_e2m1fn_x2":
        table = np.array(_FP4_E2M1, dtype=np.float32)
        codes = np.asarray(raw, dtype=np.uint8)
        out = np.empty(codes.shape + (2,), dtype=np.float32)
        out[..., 0] = table[codes & 0x0F]
        out[..., 1] = table[codes >> 4]
        return out.reshape(codes.shape[:-1] + (codes.shape[-1] * 2,) if codes.ndim else (2,))
    return _fp8_table(dtype.name)[raw]


def unpack_sub_byte(packed: np.ndarray, per_byte: int, first: int, count: int) -> np.ndarray:
    """Logical elements ``first .. first + count`` of bytes packing ``per_byte`` values each, lowest
    bits first (torch's quint4x2 / quint2x4 layout), one uint8 per element."""
    bits = 8 // per_byte
    b = np.frombuffer(packed, dtype=np.uint8) if not isinstance(packed, np.ndarray) else packed
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits)
    allv = ((b[:, None] >> shifts[None, :]) & ((1 << bits) - 1)).reshape(-1)
    return allv[first:first + count]
