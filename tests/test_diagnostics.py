import json
import math

import pytest
import torch

from flowpwm import integrators
from flowpwm.analysis.diagnostics import (actor_saturation, count_nfe, default_fine_substeps, flow_straightness,
                                          format_report, jacobian_spectral_norm, latent_spread, main, open_loop_errors,
                                          open_loop_from_latents)
from flowpwm.config import UserError
from flowpwm.data.toy import SimplexMixing, ToyOscillator, sample_windows
from flowpwm.models.actor import Actor
from flowpwm.training.online import train

from helpers import fit_flow_to_map, tiny_wm
from test_training import cfg_for


def test_open_loop_error_is_small_for_a_fitted_model_and_grows_for_an_untrained_one():
    target = SimplexMixing(latent_dim=16, simnorm_dim=8, action_dim=2, seed=1)
    wm = fit_flow_to_map(target, iters=400)
    z, _ = target.sample(512)
    action = torch.rand(4, 512, 2) * 2 - 1
    latents = [z]
    for a in action:
        latents.append(target(latents[-1], a))
    latents = torch.stack(latents)
    r = open_loop_from_latents(wm, latents, action)
    stay_put = (latents[1] - latents[0]).pow(2).mean().item()  # error of predicting z' = z
    assert r["latent_mse"][0] < 1e-3 and r["latent_mse"][0] < 0.05 * stay_put, (r["latent_mse"], stay_put)

    system = ToyOscillator(obs_dim=12, action_dim=2, seed=0)
    obs, act, rew = sample_windows(system.rollout(16, 40), 64, 8, torch.Generator().manual_seed(0))
    r = open_loop_errors(tiny_wm("flow", obs_dim=12).eval(), obs, act, rew)
    mse = r["latent_mse"]
    assert len(mse) == 8 and len(r["reward_abs_err"]) == 8
    assert mse[-1] > 2 * mse[0] and mse[3] > mse[0], mse


def _velocity_depending_only_on(wm, keep_tau: bool):
    """Zero the first velocity layer's columns that read z (and τ unless keep_tau), so the
    velocity is a function of the action alone (or of the action and τ)."""
    first = wm._velocity[0].weight  # input = [z, a, τ features]
    with torch.no_grad():
        first[:, :wm.latent_dim] = 0
        if keep_tau:
            first[:, -wm.tau_dim:].normal_(std=1.0)
        else:
            first[:, -wm.tau_dim:] = 0
        torch.nn.init.normal_(wm._velocity[-1].weight, std=0.2)
    return wm.eval()


def test_straightness_is_zero_for_a_velocity_constant_along_the_path_and_positive_otherwise():
    z = torch.softmax(torch.randn(64, 8, 8), -1).reshape(64, 64)
    a = torch.rand(64, 2) * 2 - 1
    straight = flow_straightness(_velocity_depending_only_on(tiny_wm("flow"), keep_tau=False), z, a)
    assert straight["straightness"].max() < 1e-6
    assert straight["integrator_gap"].max() < 1e-5  # any integrator is exact on a constant field

    curved = flow_straightness(_velocity_depending_only_on(tiny_wm("flow"), keep_tau=True), z, a)
    assert curved["straightness"].min() > 1e-2
    assert curved["straightness"].shape == curved["integrator_gap"].shape == (64,)

    # a velocity fitted to a map whose straight paths are exact is much straighter than an untrained one
    target = SimplexMixing(latent_dim=16, simnorm_dim=8, action_dim=2, seed=1)
    fitted, untrained = fit_flow_to_map(target, iters=300), fit_flow_to_map(target, iters=0)
    z, a = target.sample(64)
    fitted, untrained = (flow_straightness(wm, z, a, 128)["straightness"].mean() for wm in (fitted, untrained))
    assert fitted < 0.1 * untrained, (fitted, untrained)


def test_the_reference_path_resolves_the_fastest_tau_feature():
    # sinusoidal features up to sin(π·2^7 τ) need ~ω = 402 steps; a raw scalar τ needs few
    assert default_fine_substeps(tiny_wm("flow", tau_embedding="sinusoidal", tau_features=16)) == 512
    assert default_fine_substeps(tiny_wm("flow", tau_embedding="scalar")) == 32
    wm = tiny_wm("flow").eval()
    torch.nn.init.normal_(wm._velocity[-1].weight, std=0.2)
    z = torch.softmax(torch.randn(32, 8, 8), -1).reshape(32, 64)
    a = torch.rand(32, 2) * 2 - 1
    assert flow_straightness(wm, z, a)["reference_gap"].max() < 0.05


def test_power_iteration_matches_the_exact_spectral_norm_of_linear_maps():
    g = torch.Generator().manual_seed(3)
    B, D, A = 32, 10, 3
    M = torch.randn(B, D, D + A, generator=g)

    def f(z, a):  # row i: the linear map M[i]
        return torch.einsum("bij,bj->bi", M, torch.cat([z, a], -1))

    z, a = torch.randn(B, D, generator=g), torch.randn(B, A, generator=g)
    est = jacobian_spectral_norm(f, z, a)
    exact = torch.linalg.matrix_norm(M, ord=2)
    assert est.shape == (B,)
    torch.testing.assert_close(est, exact, rtol=1e-4, atol=0)


@pytest.mark.parametrize("kind", ["mlp", "flow"])
def test_world_model_jacobian_norm_agrees_with_the_full_jacobian(kind):
    wm = tiny_wm(kind).eval()
    z = wm.encode(torch.randn(8, 6)).detach()
    a = torch.rand(8, 2) * 2 - 1
    jz, ja = torch.func.vmap(torch.func.jacrev(lambda z, a: wm.next(z[None], a[None])[0], argnums=(0, 1)))(z, a)
    exact = torch.linalg.matrix_norm(torch.cat([jz, ja], -1), ord=2).detach()
    est = jacobian_spectral_norm(wm, z, a)
    assert (est <= exact * (1 + 1e-4)).all()
    torch.testing.assert_close(est, exact, rtol=1e-3, atol=0)


@pytest.mark.parametrize("method,substeps", [("heun", 2), ("euler", 3)])
def test_nfe_counts_what_the_integrator_costs(method, substeps):
    wm = tiny_wm("flow", integrator=method, substeps=substeps)
    z = torch.softmax(torch.randn(5, 8, 8), -1).reshape(5, 64)
    n = count_nfe(wm, z, torch.zeros(5, 2), horizon=4)
    assert n["per_next"] == integrators.nfe(method, substeps) == n["expected_per_next"]
    assert n["per_rollout"] == 4 * integrators.nfe(method, substeps)


@pytest.mark.parametrize("kind,extra", [("flow", ()), ("flow", ("alg.world_model.flow_space=logits",)), ("mlp", ())])
def test_diagnose_a_checkpoint_path_end_to_end(kind, extra, tmp_path, capsys):
    run = tmp_path / "run"
    train(cfg_for(kind, extra=extra), run, log=lambda *_: None)
    out = tmp_path / "diag" / "d.json"
    assert main([str(run / "checkpoints" / "latest.pt"), "--slices", "16", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 1 |" in text and "spectral norm" in text and ("straightness" in text) == (kind == "flow")

    d = json.loads(out.read_text())
    H = d["horizon"]
    assert d["kind"] == kind and d["slices"] == 16 and len(d["open_loop"]["latent_mse"]) == H
    js = d["jacobian_spectral_norm"]
    assert 0 < js["mean"] <= js["max"] and math.isfinite(js["max"])
    if kind == "flow":
        fl = d["flow"]
        assert fl["straightness"]["mean"] >= 0 and math.isfinite(fl["straightness"]["max"])
        assert math.isfinite(fl["integrator_gap"]["mean"])
        assert d["nfe"]["per_next"] == integrators.nfe(fl["integrator"], fl["substeps"])
        assert d["nfe"]["per_rollout"] == H * d["nfe"]["per_next"]
    else:
        assert d["flow"] is None
    assert format_report(d).startswith(str(run))
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left no temp file

    act = d["actor"]
    assert 0 <= act["saturated"] <= 1 and 0 < act["tanh_grad"] <= 1 and act["abs_p90"] >= 0
    assert "pre-tanh means" in text

    lat = d["latent"]
    assert lat["total_variance"] > 0 and 1 <= lat["effective_rank"] <= d["latent_dim"] and lat["step_median"] > 0

    # a run directory gives the same numbers; --simulator adds the checks against the real env
    assert main([str(run), "--slices", "16", "--simulator", "2", "--json", str(tmp_path / "same.json")]) == 0
    same = json.loads((tmp_path / "same.json").read_text())
    assert same["open_loop"] == d["open_loop"] and "simulator" not in d
    sim = same["simulator"]
    assert sim["states"] == 2 and math.isfinite(sim["returns"]["real_return"])
    assert -1 <= sim["action_sensitivity"]["latent_cosine"] <= 1 and "against the simulator" in capsys.readouterr().out


def test_actor_saturation_tells_saturated_means_from_centred_ones():
    actor = Actor(8, 3, units=[16])
    z = torch.randn(256, 8)
    with torch.no_grad():
        actor.mu_net[-1].weight.zero_()
        actor.mu_net[-1].bias.copy_(torch.tensor([0.0, 12.0, -12.0]))
    s = actor_saturation(actor, z)
    assert s["saturated"] == pytest.approx(2 / 3) and s["abs_mean"] == pytest.approx(8.0)
    assert s["tanh_grad"] == pytest.approx(1 / 3, abs=1e-6)  # tanh'(0) = 1, tanh'(+-12) ~ 2e-10
    with torch.no_grad():
        actor.mu_net[-1].bias.zero_()
    assert actor_saturation(actor, z) == {"abs_mean": 0.0, "abs_p90": 0.0, "saturated": 0.0, "tanh_grad": 1.0}


def test_latent_spread_tells_a_collapsed_encoder_from_a_spread_one():
    g = torch.Generator().manual_seed(0)
    spread = latent_spread(torch.randn(4096, 16, generator=g))
    assert spread["effective_rank"] > 15 and spread["total_variance"] == pytest.approx(16, rel=0.1)
    # every latent on one line, 100x smaller: one direction, 1e-4 of the variance
    line = torch.randn(4096, 1, generator=g) * 0.01 * torch.ones(1, 16) / 4
    collapsed = latent_spread(line + 1e-6 * torch.randn(4096, 16, generator=g))
    assert collapsed["effective_rank"] < 1.1 and collapsed["total_variance"] < 1e-3


def test_diagnose_rejects_paths_that_are_not_runs_or_checkpoints(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        main([str(tmp_path / "missing")])
    with pytest.raises(UserError, match="no checkpoint"):
        main([str(tmp_path)])
    stray = tmp_path / "latest.pt"
    stray.write_bytes(b"")
    with pytest.raises(UserError, match="not inside a run directory"):
        main([str(stray)])
    (tmp_path / "config.yaml").write_text("alg: {}\n")
    bad = tmp_path / "checkpoints" / "latest.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a flowpwm checkpoint"):
        main([str(bad)])
