import numpy as np
import pytest
import torch

from diffusia.calib.base import StreamingHistogram, get_calibrator
from diffusia.calib.mse import quant_mse
from diffusia.errors import DiffusiaError


def batches(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4000, generator=g) * (1 + i / 4) + i / 8 for i in range(n)]  # range grows


def test_minmax_exact():
    c = get_calibrator("minmax")
    xs = batches()
    for x in xs:
        c.collect(x)
    allx = torch.cat(xs)
    assert c.compute() == (float(allx.min()), float(allx.max()))


def test_percentile_matches_exact_quantiles_streaming():
    c = get_calibrator("percentile", bins=2048)
    xs = batches()
    for x in xs:
        c.collect(x)
    allx = torch.cat(xs)
    lo, hi = c.compute()
    width = float(allx.max() - allx.min()) / 2048
    assert abs(lo - float(torch.quantile(allx, 0.001))) < 3 * width
    assert abs(hi - float(torch.quantile(allx, 0.999))) < 3 * width
    assert c.hist.counts.shape == (2048,) and abs(c.hist.counts.sum() - allx.numel()) < 1e-6 * allx.numel()


def test_percentile_custom_value():
    c = get_calibrator("percentile", percentile=99.0)
    x = torch.arange(10001, dtype=torch.float32)
    c.collect(x)
    lo, hi = c.compute()
    assert abs(lo - 100) < 3 and abs(hi - 9900) < 3


def test_mse_clips_outliers_and_beats_minmax():
    x = torch.cat([torch.randn(20000, generator=torch.Generator().manual_seed(1)), torch.tensor([40.0, -30.0])])
    m = get_calibrator("mse", qmax=255)
    m.collect(x)
    lo, hi = m.compute()
    assert -30 < lo < -2 and 2 < hi < 40
    h = m.hist

    def err(a, b):
        return float(quant_mse(h.centers(), h.counts, a, torch.tensor([b]).numpy(), 255)[0])

    assert err(lo, hi) < err(-30.0, 40.0)


def test_symmetric_mse_searches_one_radius():
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.nn.functional.silu(torch.randn(200000, generator=g) * 2), torch.tensor([60.0])])
    m = get_calibrator("mse", qmax=255, symmetric=True)
    m.collect(x)
    lo, hi = m.compute()
    assert lo == -hi and 0 < hi < 30  # the outlier is clipped, the range stays symmetric
    h = m.hist

    def err(r):
        return float(quant_mse(h.centers(), h.counts, -r, np.array([r]), 255)[0])

    assert err(hi) < err(60.0) / 20
    assert err(hi) == pytest.approx(min(err(r) for r in 60 * np.linspace(1 / 40, 1, 40)))  # the best on its grid
    pos = get_calibrator("mse", qmax=255, symmetric=True)
    pos.collect(x.clamp(min=0))  # no negative part: the asymmetric search, lo stays 0
    assert pos.compute()[0] == 0.0


def test_constant_and_nonfinite_input():
    for name in ("minmax", "percentile", "mse"):
        c = get_calibrator(name)
        c.collect(torch.tensor([2.0, 2.0, float("nan"), float("inf")]))
        lo, hi = c.compute()
        assert abs(lo - 2) < 1e-3 and abs(hi - 2) < 1e-3


@pytest.mark.parametrize("name", ["minmax", "percentile", "mse"])
def test_reset_and_empty(name):
    c = get_calibrator(name)
    assert c.empty
    with pytest.raises(DiffusiaError, match="no data"):
        c.compute()
    c.collect(torch.randn(100))
    assert not c.empty
    c.reset()
    assert c.empty


def test_unknown_calibrator():
    with pytest.raises(DiffusiaError, match="minmax, mse, percentile"):
        get_calibrator("entropy")


def test_histogram_rebin_keeps_mass():
    h = StreamingHistogram(64)
    h.add(torch.linspace(0, 1, 1000))
    h.add(torch.linspace(-5, 5, 1000))
    assert abs(h.counts.sum() - 2000) < 1e-6 and (h.lo, h.hi) == (-5.0, 5.0)
    assert abs(h.quantile(0.5) - 5 / 11) < 0.05  # 100 m + 1000 m + 500 = 1000


def test_histogram_of_large_tensors_subsamples_but_keeps_range_and_count():
    gen = torch.Generator().manual_seed(0)
    h = StreamingHistogram(bins=2048, max_samples=1 << 12)
    xs = [torch.randn(200_000, generator=gen) for _ in range(20)]
    for x in xs:
        h.add(x)
    full = torch.cat(xs)
    assert h.counts.sum() == pytest.approx(full.numel())
    assert (h.lo, h.hi) == (pytest.approx(float(full.min())), pytest.approx(float(full.max())))
    assert h.quantile(0.999) == pytest.approx(float(torch.quantile(full[::50], 0.999)), rel=0.03)


def test_histogram_subsample_sees_every_channel():
    """25 calls of a (batch, tokens, channels) input with one outlier channel of 320: a strided subset of 65k
    values (stride 20, dividing 320) would see 16 channels and miss it in every call; the random subsets give the
    99.9th percentile of all the values (the tail is the outlier channel) within 5 %."""
    gen = torch.Generator().manual_seed(0)
    hist, seen = StreamingHistogram(), []
    for _ in range(25):
        x = torch.randn(4, 1024, 320, generator=gen)
        x[..., 7] *= 50
        hist.add(x)
        seen.append(x.numpy().reshape(-1))
    exact = float(np.quantile(np.concatenate(seen), 0.999))
    assert abs(hist.quantile(0.999) - exact) < 0.05 * exact, (hist.quantile(0.999), exact)
    again = StreamingHistogram()
    again.add(x)
    once = StreamingHistogram()
    once.add(x)
    assert np.array_equal(again.counts, once.counts)  # seeded: calibration stays deterministic


def test_adopt_across_calibrators_that_collect_the_same():
    xs = batches()
    pct = get_calibrator("percentile")
    for x in xs:
        pct.collect(x)
    allx = torch.cat(xs)
    mm = get_calibrator("minmax")  # from a histogram: its range is the exact min and max seen
    mm.adopt(pct)
    assert mm.compute() == (float(allx.min()), float(allx.max()))
    mse = get_calibrator("mse", qmax=255)  # percentile and MSE both collect a histogram
    mse.adopt(pct)
    assert np.array_equal(mse.hist.counts, pct.hist.counts)
    with pytest.raises(DiffusiaError, match="cannot take over"):
        get_calibrator("percentile").adopt(mm)  # a histogram cannot come from a min and a max
