"""One tensor's values as a file other tools read: ``.npy`` (any shape) or ``.csv`` (two dimensions or less).

``.npy`` keeps the tensor's dtype wherever numpy has it (float16/32/64, the integer types, bool, complex64/128);
bfloat16, the float8 types and other types numpy lacks are widened to float32 (complex32 to complex64), and
the result says so in :attr:`ValuesWritten.notes`. Every value of those types is exactly a float32 value, so
nothing is rounded. The file is streamed chunk by chunk (memory stays at about one chunk whatever the size).

``.csv`` writes one line per row (a 1-D tensor one value per line, a 0-D one value) with each value in the
fewest digits that read back to the same value of the tensor's dtype (float32 for the widened types): numpy's
shortest round-trip text, so ``np.loadtxt(f, delimiter=",", dtype=...)`` gives the tensor back exactly.
Booleans are written ``True``/``False``.

Both go to a temporary file beside the destination, are flushed, re-read and compared with what was
written (the sha256 of the file's bytes; for ``.npy`` also the header's dtype and shape as numpy reads it),
then renamed into place: the destination holds either its old content or the whole new file.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from typing import Generator

import numpy as np

from ..model.dtypes import to_numbers
from ..model.tensor import CHUNK_BYTES, TensorRef
from ..util.errors import CheckpointError, OperationError, StorageError
from ..util.progress import Progress
from .destination import check_destination, fsync_dir, fsync_file, source_files

FORMATS = ("npy", "csv")
# Copying values to the clipboard builds the whole text in memory: past this many values, export a file.
MAX_COPY_VALUES = 1 << 20
CSV_CHUNK_VALUES = 1 << 18          # formatting goes in pieces this size (about 30 MB of text at most)


@dataclass
class ValuesWritten:
    path: str
    fmt: str
    dtype: str                      # the numpy dtype written (npy) or read back as (csv)
    shape: tuple[int, ...]
    size: int
    notes: list[str] = field(default_factory=list)


def format_for_path(path: str) -> str:
    low = str(path).lower()
    if low.endswith(".csv"):
        return "csv"
    if low.endswith(".npy"):
        return "npy"
    raise OperationError(f"{os.path.basename(str(path))}: write values to a .npy or a .csv file",
                         hint="Name the output file with one of those suffixes.")


def _readable(t: TensorRef) -> None:
    if not t.readable:
        raise StorageError(t.problem or "this tensor has no stored values")


def output_layout(t: TensorRef) -> tuple[np.dtype, tuple[int, ...], list[str]]:
    """The numpy dtype and shape a file of ``t``'s values holds, and what had to change (notes)."""
    name = t.dtype.name
    notes: list[str] = []
    probe = to_numbers(np.zeros(1, dtype=_raw_dtype(t)), t.dtype)
    dt = np.dtype(probe.dtype).newbyteorder("<") if probe.dtype.itemsize > 1 else np.dtype(probe.dtype)
    shape = tuple(t.shape)
    if probe.size != 1 and shape:                   # packed types: several values per stored element
        shape = shape[:-1] + (shape[-1] * probe.size,)
    if not t.dtype.numpy_native or probe.size != 1:
        notes.append(f"{name} has no numpy dtype: written as {dt.name} (exact: every {name} value is a "
                     f"{dt.name} value)")
    elif t.dtype.kind == "quantized":
        notes.append(f"{name}: the stored integers are written (scale and zero point not applied)")
    elif t.dtype.kind == "bits":
        notes.append(f"{name}: raw bits written as {dt.name}")
    return dt, shape, notes


def _raw_dtype(t: TensorRef) -> np.dtype:
    return t.dtype.numpy


def _value_chunks(t: TensorRef, dt: np.dtype):
    for chunk in t.iter_raw(CHUNK_BYTES):
        vals = to_numbers(chunk.reshape(-1), t.dtype)
        yield np.ascontiguousarray(vals, dtype=dt)


def write_values_steps(t: TensorRef, dest: str, *, fmt: str | None = None, overwrite: bool = False,
                       sources: tuple[str, ...] = ()) -> Generator[Progress, None, ValuesWritten]:
    """Write ``t``'s values to ``dest`` (``.npy`` or ``.csv``), atomically; yields :class:`Progress`."""
    fmt = fmt or format_for_path(dest)
    if fmt not in FORMATS:
        raise OperationError(f"unknown values format {fmt!r}; use one of {', '.join(FORMATS)}")
    _readable(t)
    dt, shape, notes = output_layout(t)
    if fmt == "csv" and len(shape) > 2:
        raise OperationError(f"a CSV file holds two dimensions or less; this tensor is shaped {list(t.shape)}",
                             hint="Write a .npy file instead.")
    real = check_destination(dest, list(sources) + sorted(source_files([t])), overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(real)}.", suffix=".ckptviewer-tmp",
                               dir=os.path.dirname(real))
    done = False
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            writer = _write_npy if fmt == "npy" else _write_csv
            yield from writer(t, f, dt, shape, digest)
            f.flush()
        fsync_file(tmp)
        yield Progress(t.numel, t.numel, "verifying")
        _verify(tmp, fmt, dt, shape, digest.hexdigest())
        os.replace(tmp, real)
        done = True
        fsync_dir(os.path.dirname(real))
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return ValuesWritten(real, fmt, dt.name, shape, os.path.getsize(real), notes)


def _write_npy(t: TensorRef, f, dt: np.dtype, shape: tuple[int, ...], digest) -> Generator[Progress, None, None]:
    import io
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False,
                                                "shape": shape})
    data = head.getvalue()
    f.write(data)
    digest.update(data)
    done = 0
    yield Progress(0, t.numel, "writing")
    for vals in _value_chunks(t, dt):
        piece = memoryview(vals).cast("B")
        f.write(piece)
        digest.update(piece)
        done += vals.size
        yield Progress(min(done, t.numel), t.numel, "writing")


def csv_lines(values: np.ndarray, columns: int) -> str:
    """Rows of ``values`` (a flat array whose size is a multiple of ``columns``) as CSV text, shortest
    round-trip digits, ending with a newline."""
    if values.size == 0:
        return ""
    if values.dtype.kind == "f" or values.dtype.kind == "c" or values.dtype.kind in "iub":
        texts = values.astype(str)
    else:                                                   # pragma: no cover - every numeric kind is above
        texts = np.array([str(v) for v in values.tolist()])
    rows = texts.reshape(-1, columns).tolist()
    return "\n".join(",".join(r) for r in rows) + "\n"


def _csv_columns(shape: tuple[int, ...]) -> int:
    return shape[-1] if len(shape) == 2 else 1


def _write_csv(t: TensorRef, f, dt: np.dtype, shape: tuple[int, ...], digest) -> Generator[Progress, None, None]:
    cols = max(1, _csv_columns(shape))
    step = max(1, CSV_CHUNK_VALUES // cols) * cols         # whole rows per piece of text
    carry = np.empty(0, dtype=dt)
    done = 0
    yield Progress(0, t.numel, "writing")
    for vals in _value_chunks(t, dt):
        vals = np.concatenate([carry, vals]) if carry.size else vals
        whole = vals.size - vals.size % cols
        for start in range(0, whole, step):
            data = csv_lines(vals[start:min(whole, start + step)], cols).encode("ascii")
            f.write(data)
            digest.update(data)
        carry = vals[whole:]
        done += whole
        yield Progress(min(done, t.numel), t.numel, "writing")
    if carry.size:
        raise StorageError("the tensor's values ended in the middle of a row")


def _verify(tmp: str, fmt: str, dt: np.dtype, shape: tuple[int, ...], expected: str) -> None:
    h = hashlib.sha256()
    with open(tmp, "rb") as f:
        while True:
            piece = f.read(CHUNK_BYTES)
            if not piece:
                break
            h.update(piece)
    if h.hexdigest() != expected:
        raise CheckpointError("the written file differs from what was written (a disk or filesystem problem); "
                              "nothing was replaced")
    if fmt == "npy":
        with open(tmp, "rb") as f:
            if np.lib.format.read_magic(f) != (1, 0):
                raise CheckpointError("the written .npy has an unexpected header version; nothing was replaced")
            read_shape, fortran, read_dt = np.lib.format.read_array_header_1_0(f)
            data_start = f.tell()
        count = 1
        for n in read_shape:
            count *= n
        if (read_dt != dt or tuple(read_shape) != tuple(shape) or fortran
                or os.path.getsize(tmp) != data_start + count * dt.itemsize):
            raise CheckpointError(f"the written .npy reads back as {read_dt} {list(read_shape)}, not {dt} "
                                  f"{list(shape)}; nothing was replaced")


# -- text for the clipboard -------------------------------------------------------------------------------
def _small_values(t: TensorRef) -> tuple[np.ndarray, np.dtype, tuple[int, ...], list[str]]:
    _readable(t)
    dt, shape, notes = output_layout(t)
    count = 1
    for n in shape:
        count *= n
    if count > MAX_COPY_VALUES:
        raise OperationError(f"{count:,} values are too many to copy as text (the limit is {MAX_COPY_VALUES:,})",
                             hint="Use Export Values to write a .npy or .csv file.")
    parts = list(_value_chunks(t, dt))
    vals = np.concatenate(parts) if parts else np.empty(0, dtype=dt)
    return vals.reshape(shape), dt, shape, notes


def csv_text(t: TensorRef) -> tuple[str, list[str]]:
    """The ``.csv`` file's content as text (for the clipboard), with the notes."""
    vals, _dt, shape, notes = _small_values(t)
    if len(shape) > 2:
        raise OperationError(f"CSV holds two dimensions or less; this tensor is shaped {list(t.shape)}",
                             hint="Copy as NumPy instead.")
    return csv_lines(vals.reshape(-1), max(1, _csv_columns(shape))), notes


def _python_float(x) -> str:
    """A float as Python source: shortest round-trip digits for its own dtype; NaN and infinities as numpy names."""
    if np.isnan(x):
        return "np.nan"
    if x in (np.inf, -np.inf):
        return "np.inf" if x > 0 else "-np.inf"
    return str(x)


def numpy_text(t: TensorRef) -> tuple[str, list[str]]:
    """Python source that rebuilds the values: ``np.array([...], dtype=np.float16)``, every value in the fewest
    digits that read back exactly."""
    vals, dt, _shape, notes = _small_values(t)
    body = np.array2string(vals, separator=", ", threshold=vals.size + 1, max_line_width=100, prefix="np.array(",
                           formatter={"float_kind": _python_float})
    text = f"np.array({body}, dtype=np.{dt.name})"
    if notes:
        text = "".join(f"# {n}\n" for n in notes) + text
    return text + "\n", notes
