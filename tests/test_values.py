"""Looking at and exporting values: planes, filter grids, lines, value pages and previews against torch's own
values, and `ckptviewer tensor` (.npy keeps or widens the dtype, .csv reads back exactly, -o - previews)."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import torch

from ckptviewer.core.analyze import planes
from ckptviewer.core.read.open import open_checkpoint
from ckptviewer.core.util.errors import OperationError
from ckptviewer.core.util.progress import run_steps
from ckptviewer.core.write import values as wv

CLI = [sys.executable, "-m", "ckptviewer", "tensor"]


def run_cli(*args):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, timeout=300)


def widened(t: torch.Tensor) -> np.ndarray:
    """What ckptviewer should give for ``t``: numpy's own dtype, or float32 for the types numpy lacks."""
    if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        return t.float().numpy()
    return t.numpy()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("values")
    g = torch.Generator().manual_seed(0)
    sd = {
        "nd": torch.randn(5, 6, 7, 8, generator=g),
        "bf16": torch.randn(300, 200, generator=g).to(torch.bfloat16),
        "fp16": torch.randn(40, 30, generator=g).half(),
        "fp8": torch.randn(12, 10, generator=g).to(torch.float8_e4m3fn),
        "transposed": torch.randn(40, 50, generator=g).t(),
        "vector": torch.randn(100_000, generator=g),
        "scalar": torch.tensor(3.25, dtype=torch.float64),
        "conv": torch.randn(64, 3, 3, 3, generator=g).half(),
        "ints": torch.arange(24).reshape(2, 3, 4),
        "mask": torch.tensor([[True, False], [False, True]]),
        "special": torch.tensor([[float("nan"), float("inf")], [-float("inf"), -0.0]]),
    }
    sd["big"] = torch.randn(3000, 2000, generator=g)
    path = folder / "values.pt"
    torch.save({"model": sd}, path)
    ckpt = open_checkpoint(path)
    yield path, sd, ckpt.root["model"], folder
    ckpt.close()


def test_planes_of_an_nd_tensor_match_torch(made):
    _, sd, root, _ = made
    p = planes.read_plane(root["nd"], (1, 3), (2, 0, 4, 0))
    assert p.exact and np.array_equal(p.values, sd["nd"][2, :, 4, :].numpy())
    p = planes.read_plane(root["nd"], (3, 0), (0, 1, 2, 0))           # rows from a later axis: transposed
    assert np.array_equal(p.values, sd["nd"][:, 1, 2, :].numpy().T)
    assert p.element_index(3, 4) == (4, 1, 2, 3)
    p = planes.read_plane(root["transposed"], planes.default_axes(root["transposed"]))
    assert np.array_equal(p.values, sd["transposed"].numpy())
    with pytest.raises(OperationError):
        planes.read_plane(root["nd"], (1, 1))
    with pytest.raises(OperationError):
        planes.read_plane(root["nd"], (0, 1), (0, 0, 9, 0))


def test_big_planes_preview_first_then_sharp(made):
    _, sd, root, _ = made
    steps = []
    full = run_steps(planes.plane_steps(root["bf16"], (0, 1), preview_side=64), progress=steps.append)
    preview = steps[0]
    assert isinstance(preview, planes.Plane) and not preview.exact and "preview" in preview.describe()
    ref = sd["bf16"].float().numpy()
    assert np.array_equal(preview.values, ref[::preview.step[0], ::preview.step[1]])
    assert full.exact and full.values.dtype == np.float32 and np.array_equal(full.values, ref)
    assert "bfloat16 widened to float32" in full.note
    pooled = run_steps(planes.plane_steps(root["big"], (0, 1), exact_limit=1000, pooled_side=100))
    assert pooled.pooled and pooled.values.shape == (100, 100) and "largest magnitude" in pooled.describe()
    ref = sd["big"].numpy()
    block = ref[30:60, 40:60]
    assert pooled.values[1, 2] == block.flat[np.abs(block).argmax()]


def test_filter_grid_and_cell_mapping(made):
    _, sd, root, _ = made
    assert planes.is_filter_bank(root["conv"]) and not planes.is_filter_bank(root["nd"])
    grid = planes.filter_grid(root["conv"], in_channel=2)
    assert grid.count == 64 and np.isnan(grid.values[3, 0])          # the gutter after the first kernel row
    for r in range(grid.values.shape[0]):
        for c in range(grid.values.shape[1]):
            cell = grid.cell_at(r, c)
            if cell is None:
                assert np.isnan(grid.values[r, c])
            else:
                o, i, j = cell
                assert grid.values[r, c] == sd["conv"][o, 2, i, j].float().item()


def test_lines_exact_and_enveloped(made):
    _, sd, root, _ = made
    v = sd["vector"].numpy()
    steps = []
    line = run_steps(planes.line_steps(root["vector"], max_points=1000, exact_limit=100), progress=steps.append)
    assert not steps[0].exact and line.exact and line.bucket == 100
    assert np.array_equal(line.high, v.reshape(1000, 100).max(axis=1))
    assert np.array_equal(line.low, v.reshape(1000, 100).min(axis=1))
    short = run_steps(planes.line_steps(root["vector"], exact_limit=200_000))
    assert np.array_equal(short.low, v) and short.bucket == 1


def test_value_pages_without_reading_the_rest(made):
    _, sd, root, _ = made
    t = root["transposed"]
    assert not t.is_contiguous
    flat = sd["transposed"].reshape(-1).numpy()
    assert np.array_equal(planes.read_values(t, 77, 300), flat[77:377])
    lay = planes.table_layout(root["nd"])
    assert (lay.rows, lay.columns) == (5 * 6 * 7, 8) and lay.row_label(43) == "[1, 0, 1, :]"
    rows = planes.read_table_rows(root["nd"], lay, 40, 5)
    assert np.array_equal(rows, sd["nd"].reshape(-1, 8)[40:45].numpy())
    lay = planes.table_layout(root["vector"])
    assert (lay.rows, lay.columns) == (100_000, 1)
    assert np.array_equal(planes.read_table_rows(root["vector"], lay, 99_990, 10).ravel(), sd["vector"][-10:].numpy())
    assert planes.read_table_rows(root["scalar"], planes.table_layout(root["scalar"]), 0, 1).item() == 3.25


def test_preview_text(made):
    _, _, root, _ = made
    text = planes.preview_text(root["ints"])
    assert text.splitlines()[0] == "[[[ 0,  1,  2,  3],"
    big = planes.preview_text(root["big"])
    assert big.count("...") == 7 and len(big.splitlines()) == 7
    assert planes.preview_text(root["scalar"]) == "3.25"


def test_transforms():
    v = np.array([[-2.0, 0.0, 1e-5], [np.nan, 3.0, 4.0]])
    plain = planes.transform(v)
    assert plain.diverging and plain.levels == (-4.0, 4.0)
    a = planes.transform(v, absolute=True)
    assert not a.diverging and a.values[0, 0] == 2.0 and a.levels == (0.0, 4.0)
    lg = planes.transform(v, absolute=True, log=True)
    assert lg.values[0, 1] == lg.levels[0] == pytest.approx(-5.0)     # zero shown at the lowest colour
    sl = planes.transform(v, log=True)
    assert sl.diverging and sl.values[0, 0] < 0 < sl.values[1, 2] and np.isnan(sl.values[1, 0])


NAMES = ["nd", "bf16", "fp16", "fp8", "transposed", "scalar", "ints", "mask", "special"]


@pytest.mark.parametrize("name", NAMES)
def test_npy_export_matches_torch(made, tmp_path, name):
    _, sd, root, _ = made
    out = tmp_path / f"{name}.npy"
    written = run_steps(wv.write_values_steps(root[name], str(out)))
    arr = np.load(out, allow_pickle=False)
    ref = widened(sd[name])
    assert arr.dtype == ref.dtype and arr.shape == ref.shape
    assert np.array_equal(arr, ref, equal_nan=True)
    assert np.array_equal(np.signbit(arr), np.signbit(ref)) if arr.dtype.kind == "f" else True
    assert bool(written.notes) == (sd[name].dtype in (torch.bfloat16, torch.float8_e4m3fn))


@pytest.mark.parametrize("name", ["bf16", "fp16", "fp8", "transposed", "scalar", "mask", "special"])
def test_csv_export_reads_back_exactly(made, tmp_path, name):
    _, sd, root, _ = made
    out = tmp_path / f"{name}.csv"
    run_steps(wv.write_values_steps(root[name], str(out)))
    ref = widened(sd[name])
    text = out.read_text()
    if ref.dtype == np.bool_:
        back = np.array([[x == "True" for x in line.split(",")] for line in text.splitlines()])
    else:
        back = np.loadtxt(io.StringIO(text), delimiter=",", dtype=ref.dtype, ndmin=2)
    assert np.array_equal(back.reshape(ref.shape), ref, equal_nan=True)
    assert len(text.splitlines()) == (ref.shape[0] if ref.ndim == 2 else ref.size)


def test_csv_refuses_three_dimensions_and_export_is_atomic(made, tmp_path):
    _, _, root, _ = made
    with pytest.raises(OperationError, match="two dimensions"):
        run_steps(wv.write_values_steps(root["nd"], str(tmp_path / "x.csv")))
    keep = tmp_path / "keep.npy"
    keep.write_bytes(b"old")
    with pytest.raises(OperationError, match="already exists"):
        run_steps(wv.write_values_steps(root["fp16"], str(keep)))
    assert keep.read_bytes() == b"old"
    gen = wv.write_values_steps(root["big"], str(keep), overwrite=True)
    next(gen)
    next(gen)
    gen.close()                                     # cancelled mid-write: the old file stays, no temporary left
    assert keep.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.npy"]
    with pytest.raises(OperationError, match=r"\.npy or a \.csv"):
        run_steps(wv.write_values_steps(root["fp16"], str(tmp_path / "x.txt")))


def test_copy_texts(made):
    _, sd, root, _ = made
    text, notes = wv.numpy_text(root["special"])
    ns = {"np": np}
    back = eval(text, ns)                                       # noqa: S307 - our own output, in a test
    assert np.array_equal(back, sd["special"].numpy(), equal_nan=True) and back.dtype == np.float32
    text, notes = wv.numpy_text(root["bf16"])
    assert text.startswith("# bfloat16") and notes
    assert np.array_equal(eval(text, ns), sd["bf16"].float().numpy())   # noqa: S307
    csv, _ = wv.csv_text(root["fp16"])
    back = np.loadtxt(io.StringIO(csv), delimiter=",", dtype=np.float16)
    assert np.array_equal(back, sd["fp16"].numpy())
    with pytest.raises(OperationError, match="too many"):
        wv.csv_text(root["big"])


def test_cli_tensor(made, tmp_path):
    path, sd, _, _ = made
    out = tmp_path / "w.npy"
    r = run_cli(path, "model/bf16", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "bfloat16" in r.stderr and "float32" in r.stderr and r.stderr.count("\n") == 1
    assert np.array_equal(np.load(out), sd["bf16"].float().numpy())
    r = run_cli(path, "model/bf16", "-o", out)
    assert r.returncode == 2 and "already exists" in r.stderr
    r = run_cli(path, "model/fp16", "-o", tmp_path / "w.csv")
    assert r.returncode == 0 and np.array_equal(np.loadtxt(tmp_path / "w.csv", delimiter=",", dtype=np.float16),
                                                sd["fp16"].numpy())
    r = run_cli(path, "model/ints", "-o", "-")
    assert r.returncode == 0 and "[2, 3, 4]  int64" in r.stdout and "[20, 21, 22, 23]]]" in r.stdout
    r = run_cli(path, "model/nope", "-o", "-")
    assert r.returncode == 2 and "no entry 'nope'" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli(path, "model", "-o", "-")
    assert r.returncode == 2 and "not a tensor" in r.stderr


def test_heatmap_colours_nan_apart_and_leaves_gutters_clear(made):
    _, sd, root, _ = made
    lut = np.stack([np.arange(256), np.zeros(256), 255 - np.arange(256), np.full(256, 255)], axis=1).astype(np.uint8)
    luts = {"diverging": lut, "sequential": lut}
    res = run_steps(planes.view_steps(root["special"], planes.ViewRequest("plane", (0, 1), (0, 0)), luts))
    assert tuple(res.rgba[0, 0]) == planes.NAN_RGBA                       # NaN: magenta, not a colour of the map
    assert tuple(res.rgba[0, 1]) == tuple(lut[-1]) and tuple(res.rgba[1, 0]) == tuple(lut[0])   # +inf, -inf
    grid = run_steps(planes.view_steps(root["conv"], planes.default_request(root["conv"]), luts))
    assert grid.rgba[3, 0, 3] == 0 and grid.rgba[0, 0, 3] == 255          # the gutter row is transparent
