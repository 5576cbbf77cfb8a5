import math

import pytest
import torch

from flowpwm.integrators import compute_flow_matching_loss, integrate, nfe, sample_tau

# dz/dτ = A z: a damped rotation with the exact solution z(1) = expm(A) z(0).
A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
Z0 = torch.tensor([[1.0, -0.5], [0.3, 0.8]], dtype=torch.float64)


def linear_field(z, tau):
    return z @ A.T


def error(method, K):
    exact = Z0 @ torch.linalg.matrix_exp(A).T
    return (integrate(linear_field, Z0, method, K) - exact).norm().item()


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_error_shrinks_at_the_method_order(method, order):
    Ks = [8, 16, 32, 64]
    errs = [error(method, K) for K in Ks]
    observed = [math.log2(errs[i] / errs[i + 1]) for i in range(len(Ks) - 1)]
    assert all(abs(p - order) < 0.15 for p in observed), (errs, observed)


def test_time_dependent_field_is_integrated_from_0_to_1():
    # dz/dτ = 2τ → z(1) = z(0) + 1; Heun is exact for a linear-in-τ field.
    z = integrate(lambda z, tau: 2 * tau.expand_as(z), torch.zeros(3, 4), "heun", 3)
    assert torch.allclose(z, torch.ones(3, 4), atol=1e-6)


def test_nfe_counts_velocity_calls():
    calls = []

    def f(z, tau):
        calls.append(1)
        return -z

    for method, K in [("euler", 3), ("heun", 3), ("heun", 1)]:
        calls.clear()
        integrate(f, torch.ones(2, 2), method, K)
        assert len(calls) == nfe(method, K)
    assert nfe("heun", 2) == 4 and nfe("euler", 5) == 5


def test_integration_is_differentiable():
    z0 = Z0.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: integrate(linear_field, z, "heun", 3), (z0,))


def test_unknown_method_and_bad_substeps_are_rejected():
    with pytest.raises(ValueError, match="euler"):
        integrate(linear_field, Z0, "rk4", 2)
    with pytest.raises(ValueError, match="substeps"):
        integrate(linear_field, Z0, "heun", 0)


def test_tau_sampling_schemes():
    u = sample_tau((20000, 1), "uniform")
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean() - 0.5) < 0.02 and abs(u.var() - 1 / 12) < 0.01
    assert torch.all(sample_tau((5, 1), "midpoint") == 0.5)
    ln = sample_tau((20000, 1), "logit_normal")
    assert 0 < ln.min() and ln.max() < 1 and abs(ln.mean() - 0.5) < 0.02
    assert ln.var() < u.var()  # concentrated on the middle of the path
    with pytest.raises(ValueError, match="logit_normal"):
        sample_tau((2, 1), "beta")


def test_flow_matching_target_is_detached_and_zero_for_the_exact_field():
    x0 = torch.randn(64, 6, requires_grad=True)
    x1 = torch.randn(64, 6, requires_grad=True)
    exact = compute_flow_matching_loss(lambda x, tau: (x1 - x0).detach(), x0, x1)
    assert exact.shape == (64,) and exact.max() < 1e-12
    loss = compute_flow_matching_loss(lambda x, tau: torch.zeros_like(x), x0, x1).mean()
    loss.backward()
    assert x1.grad is None and x0.grad.abs().sum() > 0
