import pytest
import torch
import torch.nn as nn

from flowpwm.data.toy import SimplexMixing
from flowpwm.integrators import compute_flow_matching_loss, integrate
from flowpwm.config import UserError, load_alg
from flowpwm.losses import _latent_rollout, compute_wm_loss, wm_loss_kwargs
from flowpwm.models import Actor, Critic, FlowWorldModel, SimNorm, WorldModel
from flowpwm.models import twohot
from flowpwm.models.factory import build_world_model
from flowpwm.models.layers import Mish

from helpers import batch, tiny_cfg, tiny_wm

KINDS = ["mlp", "flow"]


def small_flow(latent_dim=16, action_dim=2, **kw):
    return FlowWorldModel(obs_dim=4, action_dim=action_dim, latent_dim=latent_dim, encoder_units=[32],
                          units=[32, 32], simnorm_dim=8, velocity_units=kw.pop("velocity_units", [128, 128]), **kw)


def test_flow_model_fits_a_known_latent_map_and_keeps_latents_on_the_simplex():
    target = SimplexMixing(latent_dim=16, simnorm_dim=8, action_dim=2, seed=1)
    wm = small_flow(integrator="heun", substeps=2, tangent_projection=True)
    opt = torch.optim.Adam(wm._velocity.parameters(), lr=2e-3)
    for _ in range(1500):
        z, a = target.sample(256)
        loss = compute_flow_matching_loss(wm.velocity_fn(a), z, target(z, a)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    z, a = target.sample(2048)
    with torch.no_grad():
        fm = sum(compute_flow_matching_loss(wm.velocity_fn(a), z, target(z, a)).mean() for _ in range(4)) / 4
        pred, true = wm.next(z, a), target(z, a)
    assert fm < 1e-3, fm
    # The integrated next() matches the map to a small fraction of the step it takes.
    assert (pred - true).abs().mean() < 0.05 * (true - z).abs().mean()
    sums = pred.reshape(-1, 2, 8).sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)


def test_without_projection_group_sums_are_not_enforced():
    wm = small_flow(tangent_projection=False)
    nn.init.normal_(wm._velocity[-1].bias, std=1.0)
    z = torch.softmax(torch.randn(64, 2, 8), -1).reshape(64, 16)
    sums = wm.next(z, torch.zeros(64, 2)).reshape(64, 2, 8).sum(-1)
    assert (sums - 1).abs().max() > 1e-2


def test_velocity_output_is_unconstrained():
    wm = small_flow(tangent_projection=False)
    assert isinstance(wm._velocity[-1], nn.Linear) and not hasattr(wm._velocity[-1], "ln")
    assert not any(isinstance(m, (SimNorm, nn.Softmax)) for m in wm._velocity.modules())
    nn.init.normal_(wm._velocity[-1].weight, std=1.0)
    v = wm.velocity(torch.rand(256, 16), torch.rand(256, 2), 0.3)
    assert v.min() < 0 and v.max() > 1  # no softmax could produce these
    assert not torch.allclose(v.reshape(256, 2, 8).sum(-1), torch.ones(256, 2))


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_flow_from_next_back_to_the_action(kind):
    wm = tiny_wm(kind).double()
    z = wm.encode(torch.randn(3, 6, dtype=torch.float64)).detach()
    a = (torch.rand(3, 2, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    wm.next(z, a).pow(2).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    # and they are the true derivatives (finite differences agree)
    assert torch.autograd.gradcheck(lambda a: wm.next(z, a), (a.detach().requires_grad_(True),))


@pytest.mark.parametrize("kind", KINDS)
def test_reward_head_gives_the_actor_a_gradient_after_one_update(kind):
    wm = tiny_wm(kind)
    z = torch.softmax(torch.randn(16, 8, 8), -1).reshape(16, 64).requires_grad_(True)
    a = torch.zeros(16, 2)
    (dr0,) = torch.autograd.grad(wm.reward_value(z, a).sum(), z)
    assert dr0.abs().max() == 0  # zero-initialised last layer: all logits equal at the start

    obs, action, reward = batch()
    assert reward.abs().min() > 0
    opt = torch.optim.Adam(wm.parameters(), lr=3e-4)
    loss, _ = compute_wm_loss(wm, obs, action, reward)
    loss.backward()
    opt.step()
    (dr1,) = torch.autograd.grad(wm.reward_value(z, a).sum(), z)
    assert torch.isfinite(dr1).all() and dr1.abs().max() > 0


@pytest.mark.parametrize("kind,source", [("mlp", None), ("flow", "encoder"), ("flow", "rollout")])
def test_wm_loss_trains_every_module_and_reports_finite_metrics(kind, source):
    wm = tiny_wm(kind)
    obs, action, reward = batch(H=5)
    kwargs = {"flow_source": source} if source else {}
    loss, m = compute_wm_loss(wm, obs, action, reward, **kwargs)
    loss.backward()
    dyn = wm._velocity if kind == "flow" else wm._dynamics
    for module in (wm._encoder, dyn, wm._reward):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    # metrics stay detached scalars on the device (no host sync per update); NFE is a count
    assert all(isinstance(v, int) if k == "nfe" else (v.dim() == 0 and not v.requires_grad and torch.isfinite(v))
               for k, v in m.items())
    assert float(m["wm_loss"]) == pytest.approx(20.0 * float(m["dynamics_loss"]) + 0.1 * float(m["reward_loss"]), rel=1e-5)


def test_flow_sources_cost_what_the_design_says():
    wm = tiny_wm("flow", integrator="heun", substeps=2)
    H = 6
    obs, action, reward = batch(H=H)
    _, enc = compute_wm_loss(wm, obs, action, reward, flow_source="encoder")
    _, roll = compute_wm_loss(wm, obs, action, reward, flow_source="rollout")
    assert enc["nfe"] == 1  # one batched velocity call for all H transitions
    # the rollout's H - 1 integrations, then one batched flow-matching call over its H sources
    assert roll["nfe"] == 1 + (H - 1) * wm.nfe_per_step
    with pytest.raises(ValueError, match="rollout"):
        compute_wm_loss(wm, obs, action, reward, flow_source="decoder")


@pytest.mark.parametrize("source", ["encoder", "rollout"])
def test_consistency_term_adds_the_integrated_latent_mse(source):
    """consistency_coef c adds c x (rho^t-weighted MSE of next() rollouts vs encoded targets) to
    the flow-matching term, so the map the actor trains through is supervised directly."""
    wm = tiny_wm("flow", integrator="heun", substeps=1)
    obs, action, reward = batch(H=5)
    losses = {}
    for c in (0.0, 2.0):
        torch.manual_seed(0)  # same tau samples
        losses[c] = compute_wm_loss(wm, obs, action, reward, flow_source=source, consistency_coef=c)
    (l0, m0), (l2, m2) = ((loss, {k: float(v) for k, v in m.items()}) for loss, m in (losses[0.0], losses[2.0]))
    assert "consistency_loss" not in m0 and m2["consistency_loss"] > 0
    assert m2["flow_matching_loss"] == pytest.approx(m0["flow_matching_loss"], rel=1e-6)
    assert (l2 - l0).item() == pytest.approx(20.0 * 2.0 * m2["consistency_loss"], rel=1e-4)
    with pytest.raises(UserError, match="consistency_coef"):
        alg = load_alg("pwm_tiny_flow")
        alg.world_model.consistency_coef = -1.0
        wm_loss_kwargs(alg)


@pytest.mark.parametrize("source", ["encoder", "rollout"])
def test_fm_source_grad_false_keeps_the_flow_matching_term_off_the_encoder(source):
    """The flow-matching target x1 - x0 shrinks with the latent scale; with fm_source_grad=False
    its gradient trains the velocity field only, never the encoder that produced x0."""
    obs, action, reward = batch(H=4)
    grads = {}
    for flag in (True, False):
        wm = tiny_wm("flow")
        loss, _ = compute_wm_loss(wm, obs, action, reward, flow_source=source, reward_coef=0.0, fm_source_grad=flag)
        loss.backward()
        grads[flag] = (sum(p.grad.abs().sum() for p in wm._encoder.parameters() if p.grad is not None),
                       sum(p.grad.abs().sum() for p in wm._velocity.parameters()))
    assert grads[True][0] > 0 and grads[False][0] == 0
    assert grads[True][1] > 0 and grads[False][1] > 0


@pytest.mark.parametrize("space", ["latent", "logits"])
@pytest.mark.parametrize("source", ["encoder", "rollout"])
def test_identity_grad_false_cuts_the_encoders_gradient_through_z_prime_equals_z(source, space):
    """With a zero velocity field next(z) = z: the consistency loss then reaches the encoder
    only through the identity path, which identity_grad=False cuts (the collapse fix). A logits
    flow's remainder is a constant per SimNorm group, which the encoder's softmax cancels."""
    obs, action, reward = batch(H=3)
    grads = {}
    for flag in (True, False):
        wm = tiny_wm("flow", flow_space=space)
        nn.init.zeros_(wm._velocity[-1].weight)
        nn.init.zeros_(wm._velocity[-1].bias)
        loss, m = compute_wm_loss(wm, obs, action, reward, flow_source=source, reward_coef=0.0, consistency_coef=1.0,
                                  fm_source_grad=False, identity_grad=flag)
        loss.backward()
        grads[flag] = sum(p.grad.abs().sum() for p in wm._encoder.parameters() if p.grad is not None)
        assert m["consistency_loss"] > 0
    assert grads[True] > 0
    # logits: entries below logit_floor lose their gradient to the floor, hence not exactly 0
    assert grads[False] == 0 if space == "latent" else grads[False] <= 1e-3 * grads[True], grads


def test_consistency_term_is_zero_when_next_hits_its_targets():
    wm = tiny_wm("flow", integrator="euler", substeps=2)
    z0 = wm.encode(torch.randn(8, wm.obs_dim))
    action = torch.rand(4, 8, wm.action_dim) * 2 - 1
    with torch.no_grad():
        z, rolled = z0, []
        for t in range(4):
            z = wm.next(z, action[t])
            rolled.append(z)
        rolled = torch.stack(rolled)
    _, _, exact = _latent_rollout(wm, z0, action, rolled, None)
    _, _, off = _latent_rollout(wm, z0, action, rolled + 0.01, None)
    assert exact.abs().max() < 1e-12
    assert off.min() > 0


def test_wm_loss_rejects_mismatched_shapes():
    wm = tiny_wm("mlp")
    obs, action, reward = batch(H=4)
    with pytest.raises(ValueError, match="H\\+1"):
        compute_wm_loss(wm, obs[:-1], action, reward)


@pytest.mark.parametrize("kind", KINDS)
def test_multitask_embedding_is_trained_and_masks_pad_actions(kind):
    wm = build_world_model(tiny_cfg(kind, task_dim=8), 6, 3, num_tasks=3, action_dims=[1, 2, 3])
    assert any(p is wm._task_emb.weight for p in wm.parameters())
    a = torch.ones(3, 3)
    assert wm.mask_action(a, torch.tensor([0, 1, 2])).tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    obs, action, reward = batch(H=3, B=6, obs_dim=6, action_dim=3)
    task = torch.tensor([0, 1, 2, 0, 1, 2])
    loss, _ = compute_wm_loss(wm, obs, action, reward, task)
    loss.backward()
    assert wm._task_emb.weight.grad.abs().sum() > 0
    # a different task gives a different latent for the same observation
    z = wm.encode(obs[0, :1].expand(2, 6), torch.tensor([0, 1]))
    assert not torch.allclose(z[0], z[1])


def test_two_hot_round_trip_and_normalisation():
    x = torch.tensor([[-50.0], [-1.3], [0.0], [0.25], [7.0], [800.0]])
    t = twohot.two_hot(x, 101, -10.0, 10.0)
    assert torch.allclose(t.sum(-1), torch.ones(6)) and (t >= 0).all()
    back = twohot.two_hot_inv(torch.log(t + 1e-12), 101, -10.0, 10.0)
    assert torch.allclose(back, x, rtol=1e-3, atol=1e-3)


def test_actor_and_critic_shapes_and_ranges():
    actor, critic = Actor(64, 3, units=[32, 16]), Critic(64, units=[32, 16], num_critics=3)
    z = torch.randn(10, 64, requires_grad=True)
    a = actor(z)
    assert a.shape == (10, 3) and a.abs().max() < 1
    assert torch.equal(actor(z, deterministic=True), actor(z, deterministic=True))
    assert not torch.equal(actor(z), actor(z))
    v = critic(z)
    assert v.shape == (3, 10, 1) and torch.equal(critic.min_value(z), v.min(0).values)
    a.sum().backward()
    assert z.grad.abs().sum() > 0


def test_baseline_dynamics_ends_in_simnorm():
    wm = tiny_wm("mlp")
    z = wm.next(torch.rand(5, 64), torch.rand(5, 2))
    assert isinstance(wm, WorldModel)
    assert torch.allclose(z.reshape(5, 8, 8).sum(-1), torch.ones(5, 8), atol=1e-5)


def test_cpu_mish_and_simnorm_compute_torchs_functions_and_their_gradients():
    # The CPU forms (a composition, a strided softmax) are there for speed only: a user's model
    # must compute TD-MPC2's Mish and SimNorm, values and gradients, to float rounding.
    x = (torch.randn(64, 48, dtype=torch.float64) * 4).requires_grad_()
    for ours, ref in ((Mish(), torch.nn.functional.mish),
                      (SimNorm(8), lambda v: torch.softmax(v.reshape(64, 6, 8), -1).reshape(64, 48))):
        w = torch.randn(64, 48, dtype=torch.float64)
        y, y_ref = ours(x), ref(x)
        g, = torch.autograd.grad((y * w).sum(), x)
        g_ref, = torch.autograd.grad((y_ref * w).sum(), x)
        assert torch.allclose(y, y_ref, atol=1e-12, rtol=1e-10) and torch.allclose(g, g_ref, atol=1e-12, rtol=1e-10)


def test_critic_members_are_independent_value_functions():
    critic = Critic(8, units=[16], num_critics=2)
    z = torch.randn(4, 5, 8)
    v = critic(z)
    assert v.shape == (2, 4, 5, 1) and not torch.allclose(v[0], v[1])
    # member 0's value depends only on member 0's weights
    (v[0].sum()).backward()
    assert critic.net[0].weight.grad[1].abs().sum() == 0 and critic.net[0].weight.grad[0].abs().sum() > 0
    # each row is computed independently of the others in the batch
    assert torch.allclose(critic(z[:1]), v[:, :1], atol=1e-6)


def test_simplex_retraction_keeps_integrated_latents_on_the_simplex():
    wm = small_flow(tangent_projection=True, simplex_retraction=True)
    nn.init.normal_(wm._velocity[-1].weight, std=1.0)  # a wild field: raw integration leaves the simplex
    z = torch.softmax(torch.randn(64, 2, 8), -1).reshape(64, 16)
    a = torch.rand(64, 2)
    raw = integrate(wm.velocity_fn(a), z, wm.integrator, wm.substeps)
    assert raw.min() < 0
    out = wm.next(z, a).reshape(64, 2, 8)
    assert out.min() >= 0 and torch.allclose(out.sum(-1), torch.ones(64, 2), atol=1e-5)
    assert torch.allclose(wm.retract(z), z, atol=1e-6)  # identity on the simplex


def test_logits_flow_round_trips_latents_and_ends_on_the_simplex():
    wm = small_flow(flow_space="logits", logit_floor=1e-3)
    nn.init.normal_(wm._velocity[-1].weight, std=1.0)  # a wild field: a latent-space flow would leave the simplex
    z = torch.softmax(torch.rand(64, 2, 8) * 4 - 2, -1).reshape(64, 16)  # every entry > e^-4 / 8 > the floor
    x = wm.to_flow(z)
    assert x.reshape(64, 2, 8).sum(-1).abs().max() < 1e-4  # each group centred: the softmax's gauge fixed
    assert torch.allclose(wm.from_flow(x), z, atol=1e-6)
    out = wm.next(z, torch.rand(64, 2)).reshape(64, 2, 8)
    assert out.min() >= 0 and torch.allclose(out.sum(-1), torch.ones(64, 2), atol=1e-5)
    with pytest.raises(ValueError, match="simplex_retraction"):
        small_flow(flow_space="logits", simplex_retraction=True)
    with pytest.raises(ValueError, match="flow_space='simplex' is unknown"):
        small_flow(flow_space="simplex")


def test_logits_flow_damps_the_action_response_of_entries_simnorm_pins():
    """The point of flow_space=logits: an entry near 0 moves with the action in proportion to its
    own probability (a softmax's Jacobian), where a latent-space flow moves it as freely as any."""
    g = torch.full((32, 2, 8), -8.0)
    g[..., :4] = torch.randn(32, 2, 4)  # four entries per group free, four pinned near e^-8
    z = torch.softmax(g, -1).reshape(32, 16)
    pinned = z < 0.05
    a = torch.zeros(32, 2, requires_grad=True)
    share = {}
    for space in ("latent", "logits"):
        torch.manual_seed(0)
        wm = small_flow(flow_space=space, logit_floor=1e-4)
        jac = torch.stack([torch.autograd.grad(wm.next(z, a)[:, i].sum(), a)[0] for i in range(16)], 1)
        energy = jac.pow(2).sum(-1)  # (32, 16): squared action response per entry
        share[space] = (energy * pinned).sum() / energy.sum()
    assert share["latent"] > 0.2 and share["logits"] < 0.01, share


def test_logits_flow_learns_a_known_latent_map():
    """Flow matching between the logits of source and target (as compute_wm_loss does for a
    logits flow) makes next() reach the target latent: here a known action-dependent tilt of
    each SimNorm group, z' = SimNorm(log z + a W)."""
    g = torch.Generator().manual_seed(1)
    W = torch.randn(2, 16, generator=g)

    def sample(n):
        return torch.softmax(torch.randn(n, 2, 8, generator=g), -1).reshape(n, 16), torch.rand(n, 2, generator=g) * 2 - 1

    def target(z, a):
        return torch.softmax((z.log() + a @ W).reshape(-1, 2, 8), -1).reshape(-1, 16)

    wm = small_flow(integrator="heun", substeps=1, flow_space="logits", logit_floor=1e-6)
    opt = torch.optim.Adam(wm._velocity.parameters(), lr=2e-3)
    for _ in range(1000):
        z, a = sample(256)
        loss = compute_flow_matching_loss(wm.velocity_fn(a), wm.to_flow(z), wm.to_flow(target(z, a))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    z, a = sample(2048)
    with torch.no_grad():
        pred, true = wm.next(z, a), target(z, a)
    assert (pred - true).abs().mean() < 0.05 * (true - z).abs().mean()


def test_wm_loss_of_a_logits_flow_matches_the_groups_logits():
    """compute_wm_loss's flow-matching term runs in the flow space: a field that is exactly the
    logit difference (zero loss there) scores zero, one that is the latent difference does not."""
    wm = tiny_wm("flow", flow_space="logits")
    obs, action, reward = batch(H=1)
    with torch.no_grad():
        z0, z1 = wm.encode(obs[0]), wm.encode(obs[1])
    exact = (wm.to_flow(z1) - wm.to_flow(z0)).detach()
    wm.velocity_fn = lambda a, task=None: (lambda x, tau: exact.expand_as(x))
    _, m = compute_wm_loss(wm, obs, action, reward, flow_source="encoder")
    assert float(m["flow_matching_loss"]) < 1e-10
    latent_step = (z1 - z0).detach()
    wm.velocity_fn = lambda a, task=None: (lambda x, tau: latent_step.expand_as(x))
    _, m = compute_wm_loss(wm, obs, action, reward, flow_source="encoder")
    assert float(m["flow_matching_loss"]) > 1e-3
