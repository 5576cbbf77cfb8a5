import math

import numpy as np
import pytest
import torch

from flowpwm.esnr import RATIO_CAP, ESNRTracker, compute_esnr


def test_constant_gradient_is_huge_but_finite():
    g = torch.tensor([0.1, -2.0, 3.0, 1e-3]).repeat(8, 1)
    out = compute_esnr(g)
    for k in ("esnr", "esnr_param", "esnr_db", "esnr_param_db"):
        assert math.isfinite(out[k]), k
    assert out["esnr"] >= 1e6 and out["esnr_param"] >= 1e6
    assert out["esnr"] <= RATIO_CAP and out["esnr_param"] <= RATIO_CAP


def test_zero_mean_noise_is_small():
    rng = np.random.default_rng(0)
    g = torch.from_numpy(rng.normal(0.0, 1.0, size=(64, 2000)))
    out = compute_esnr(g)
    # ||mean g||^2 ~ P/M and the noise ~ P, so both forms sit near 1/M = 0.0156.
    assert 0.005 < out["esnr"] < 0.1
    assert 0.005 < out["esnr_param"] < 0.1
    assert out["samples"] == 64


def test_matches_independent_numpy_formula():
    rng = np.random.default_rng(1)
    m, p = 16, 50
    mu = rng.normal(0.0, 1.0, size=p)
    sigma = rng.uniform(0.5, 2.0, size=p)
    g = mu + sigma * rng.normal(size=(m, p))

    gbar = g.mean(axis=0)
    dev = ((g - gbar) ** 2).sum(axis=1)  # ||g_m - gbar||^2 per sample
    noise = dev.sum() / (m - 1)
    var = ((g - gbar) ** 2).sum(axis=0) / (m - 1)

    out = compute_esnr(torch.from_numpy(g))
    assert out["esnr"] == pytest.approx((gbar @ gbar) / noise, rel=1e-9)
    assert out["esnr_param"] == pytest.approx(np.mean(gbar**2 / var), rel=1e-9)
    assert out["grad_norm_mean"] == pytest.approx(np.linalg.norm(gbar), rel=1e-9)
    assert out["esnr_db"] == pytest.approx(10 * math.log10(out["esnr"]), rel=1e-12)
    assert out["esnr_param_db"] == pytest.approx(10 * math.log10(out["esnr_param"]), rel=1e-12)
    assert all(type(v) is float for v in out.values())


def test_parameter_lists_equal_flat_tensor():
    torch.manual_seed(3)
    samples = [[torch.randn(3, 4) + 1.0, torch.randn(5)] for _ in range(6)]
    flat = torch.stack([torch.cat([w.reshape(-1), b]) for w, b in samples])
    assert compute_esnr(samples) == compute_esnr(flat)
    assert compute_esnr(list(flat)) == compute_esnr(flat)


def test_dead_parameters_are_excluded_and_zero_gradient_is_finite():
    torch.manual_seed(4)
    live = torch.randn(8, 5) + 0.5
    with_dead = torch.cat([live, torch.zeros(8, 3)], dim=1)
    assert compute_esnr(with_dead)["esnr_param"] == pytest.approx(compute_esnr(live)["esnr_param"], rel=1e-12)

    zero = compute_esnr(torch.zeros(4, 10))
    assert zero["esnr"] == 0.0 and zero["esnr_param"] == 0.0
    assert math.isfinite(zero["esnr_db"]) and zero["esnr_db"] < -100


def test_needs_two_samples():
    with pytest.raises(ValueError, match="M >= 2"):
        compute_esnr(torch.randn(1, 10))
    with pytest.raises(ValueError, match="M >= 2"):
        compute_esnr([[torch.randn(3)]])


def test_tracker_ema_and_window():
    tr = ESNRTracker(window=2, ema=0.5)
    seq = [4.0, 2.0, 8.0]
    outs = [tr.update({"esnr": v}) for v in seq]
    assert [o["esnr"] for o in outs] == seq
    assert [o["esnr_ema"] for o in outs] == [4.0, 3.0, 5.5]  # 0.5*4+0.5*2, 0.5*3+0.5*8
    assert [o["esnr_window"] for o in outs] == [4.0, 3.0, 5.0]  # last two only


def test_tracker_state_round_trip():
    a = ESNRTracker(window=3, ema=0.9)
    for v in [1.0, 5.0, 2.0, 7.0]:
        a.update({"esnr": v, "esnr_db": 10 * v})
    b = ESNRTracker(window=3, ema=0.9)
    b.load_state_dict(a.state_dict())
    assert b.update({"esnr": 3.0, "esnr_db": 1.0}) == a.update({"esnr": 3.0, "esnr_db": 1.0})


@pytest.mark.parametrize("kwargs", [{"window": 0}, {"ema": 1.0}, {"ema": -0.1}])
def test_tracker_validates(kwargs):
    with pytest.raises(ValueError):
        ESNRTracker(**kwargs)
