"""Streaming statistics and histograms (core/analyze/stats.py) against numpy/torch on the same values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ckptviewer.core.analyze import stats
from ckptviewer.core.util.errors import CancelledError
from ckptviewer.core.read.open import open_checkpoint


def _open_one(tmp_path, tensor: torch.Tensor, name: str = "t.pt"):
    path = tmp_path / name
    torch.save({"t": tensor}, path)
    ckpt = open_checkpoint(path)
    return ckpt, ckpt.root["t"]


def test_stats_match_numpy_over_many_small_chunks(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(257, 33) * 3 + 1
    x[0, 0] = float("nan")
    x[1, 1] = float("inf")
    x[2, 2] = float("-inf")
    x[3, :5] = 0
    ckpt, t = _open_one(tmp_path, x)
    with ckpt:
        s = stats.run_steps(stats.stats_steps(t, chunk_bytes=512))
    v = x.numpy().astype(np.float64).ravel()
    fin = v[np.isfinite(v)]
    assert s.numel == v.size
    assert (s.nan, s.posinf, s.neginf) == (1, 1, 1)
    assert s.finite == fin.size
    assert s.zeros == 5
    assert s.min == fin.min() and s.max == fin.max()
    assert s.mean == pytest.approx(fin.mean(), rel=1e-12)
    assert s.std == pytest.approx(fin.std(), rel=1e-10)
    assert s.l2 == pytest.approx(math.sqrt((fin ** 2).sum()), rel=1e-12)
    assert s.zero_fraction == pytest.approx(5 / v.size)


def test_exact_histogram_counts_sum_to_finite_values(tmp_path):
    x = torch.randn(1000, 17)
    x[::7, 3] = float("nan")
    x[5, :] = float("inf")
    ckpt, t = _open_one(tmp_path, x)
    with ckpt:
        st_ = stats.compute_stats(t)
        h = stats.run_steps(stats.histogram_steps(t, st_, bins=50, chunk_bytes=4096))
    v = x.numpy().ravel()
    fin = v[np.isfinite(v)]
    assert h.exact and h.counts.sum() == fin.size == h.finite
    ref, _ = np.histogram(fin.astype(np.float64), bins=h.edges)
    assert np.array_equal(h.counts, ref)
    assert h.nan == int(np.isnan(v).sum()) and h.posinf == 17


def test_integer_tensor_gets_one_bin_per_value(tmp_path):
    x = torch.tensor([0, 1, 1, 2, 2, 2, 5], dtype=torch.int64)
    ckpt, t = _open_one(tmp_path, x)
    with ckpt:
        h = stats.exact_histogram(t)
    assert h.integer_bins
    assert list(h.counts) == [1, 2, 3, 0, 0, 1]
    assert h.bin_at(2.0) == 2 and h.bin_at(99) is None


def test_every_dtype_streams(ckpts):
    with open_checkpoint(ckpts["dtypes.pt"]) as ckpt:
        for name, t in ckpt.root.items():
            s = stats.compute_stats(t)
            h = stats.exact_histogram(t)
            assert s.numel == 12, name
            assert h.counts.sum() == s.finite, name
            ref = ckpts.objects["dtypes.pt"][name]
            if ref.is_complex():
                ref = ref.abs()
            ref = ref.to(torch.float64)
            fin = ref[torch.isfinite(ref)]
            if fin.numel():
                assert s.max == pytest.approx(fin.max().item()), name
                assert s.mean == pytest.approx(fin.mean().item(), rel=1e-6, abs=1e-9), name


def test_sampled_histogram_reads_strided_views_and_scales(tmp_path):
    base = torch.arange(4000 * 300, dtype=torch.float32).reshape(4000, 300)
    view = base.t()[::2]                 # non-contiguous, offset-free view with odd strides
    ckpt, t = _open_one(tmp_path, view)
    with ckpt:
        sample = stats.sample_values(t, 1000)
        assert sample.size == 1000
        flat = view.contiguous().reshape(-1).numpy()
        idx = np.linspace(0, flat.size - 1, 1000).round().astype(np.int64)
        assert np.array_equal(sample, flat[idx])
        h = stats.sampled_histogram(t, bins=10, size=1000)
        assert not h.exact and h.sample_size == 1000
        assert h.counts.sum() == pytest.approx(view.numel())


def test_tensor_steps_order_and_cancel(tmp_path):
    x = torch.randn(2048, 1024)
    ckpt, t = _open_one(tmp_path, x)
    with ckpt:
        kinds = [type(s).__name__ for s in stats.tensor_steps(t, chunk_bytes=1 << 20, sample_threshold=1000)]
        assert kinds[0] == "Histogram"
        assert "TensorStats" in kinds and kinds[-1] == "Histogram"
        assert kinds.index("TensorStats") < len(kinds) - 1
        seen = []
        with pytest.raises(CancelledError):
            stats.run_steps(stats.stats_steps(t, chunk_bytes=1 << 20), progress=seen.append,
                            cancelled=lambda: len(seen) >= 3)
        assert len(seen) == 3


def test_degenerate_ranges():
    h = stats.histogram_of(np.full(10, 3.25, dtype=np.float32))
    assert h.counts.sum() == 10
    h = stats.histogram_of(np.array([np.nan, np.inf], dtype=np.float32))
    assert h.finite == 0 and h.nan == 1 and h.posinf == 1 and h.counts.size == 0
    big = np.array([-1.7e308, 1.7e308, 0.0])
    h = stats.histogram_of(big)
    assert h.counts.sum() == 3 and np.all(np.isfinite(h.edges))
    # Found by hypothesis: integers past 2**52 have no exact half-integer edges.
    for v in (9007199254740992, -4503599627370496, 2**62):
        h = stats.histogram_of(np.array([v, v], dtype=np.int64), bins=1)
        assert h.counts.sum() == 2 and len(h.edges) >= 2
    h = stats.histogram_of(np.array([np.finfo(np.float64).max] * 3))
    assert h.counts.sum() == 3


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int64]),
                  shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=20)),
       st.integers(min_value=1, max_value=300))
def test_histogram_counts_always_sum_to_finite(values, bins):
    h = stats.histogram_of(values, bins=bins)
    v = values.ravel()
    finite = int(np.isfinite(v).sum()) if v.dtype.kind == "f" else v.size
    assert h.counts.sum() == finite == h.finite
    acc = stats.StatsAccumulator()
    for part in np.array_split(v, 3):
        acc.update(part)
    s = acc.result()
    assert s.finite == finite
    if finite:
        fin = v[np.isfinite(v)] if v.dtype.kind == "f" else v
        assert s.min == float(fin.min()) and s.max == float(fin.max())
