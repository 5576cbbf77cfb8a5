"""perf: knobs: every fast path computes what the eager, float-metric path computes (on the CPU,
to float-rounding tolerance), and metrics reach the host as floats."""

import math

import pytest
import torch

from flowpwm import perf
from flowpwm.algorithms.pwm import PWM
from flowpwm.config import compose, load_alg
from flowpwm.perf import host_means
from flowpwm.training.online import OnlineTrainer

FAST = ["env.num_envs=2", "train.seed_steps=40", "train.pretrain_iterations=2", "train.steps_per_epoch=4",
        "train.eval_episodes=1", "train.eval_every=1", "train.checkpoint_every=1", "alg.wm_batch_size=16",
        "alg.wm_iterations=2", "alg.actor_batch_size=8", "alg.critic_iterations=1", "alg.policy_iterations=2",
        "alg.horizon=4", "train.threads=1", "wandb.mode=disabled", "monitor.progress=off", "train.plots=false",
        "train.env_steps=48", "train.esnr_every=1", "train.esnr_samples=2"]
OFF = ["perf.device_metrics=false", "perf.fused_adam=false", "perf.tf32=false", "perf.compile=false"]
ON = ["perf.device_metrics=true", "perf.fused_adam=true", "perf.tf32=true", "perf.compile=true"]


@pytest.fixture
def same_random_numbers():
    """Inductor draws its own random numbers unless told to call torch's (same seed, same τ)."""
    import torch._inductor.config as inductor

    with inductor.patch(fallback_random=True):
        yield


def one_epoch(tmp_path, name, kind, extra):
    alg = "pwm_tiny_flow" if kind == "flow" else "pwm_tiny"
    cfg = compose([f"alg={alg}", *FAST, *extra])
    trainer = OnlineTrainer(cfg, tmp_path / name, log=lambda *_: None)
    try:
        trainer.train()
    finally:
        trainer.close()
    records = trainer.run.records()
    params = {f"{n}.{k}": v.detach().clone() for n, m in (("wm", trainer.agent.wm), ("actor", trainer.agent.actor),
                                                          ("critic", trainer.agent.critic))
              for k, v in m.state_dict().items()}
    return records, params, trainer.agent


def assert_records_close(a, b, rtol):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        # timings differ; esnr_param (the mean over parameters of (E g)² / Var g, here from 2 samples)
        # divides by near-zero variances and turns rounding into percent: the global esnr is checked
        keys = [k for k in ra if k not in ("wall_time", "fps", "rss_mib", "esnr_time") and not k.startswith("esnr_param")]
        assert set(keys) <= set(rb)
        for k in keys:
            if isinstance(ra[k], float) and math.isfinite(ra[k]):
                assert isinstance(rb[k], float), k  # plain floats reach metrics.jsonl, W&B and the monitor
                assert rb[k] == pytest.approx(ra[k], rel=rtol, abs=1e-6), k
            else:
                assert rb[k] == ra[k], k


@pytest.mark.parametrize("kind", ["mlp", "flow"])
def test_one_epoch_with_every_perf_flag_on_matches_all_off(kind, tmp_path, same_random_numbers):
    """Same seed, one epoch (seed phase, world-model pretraining, updates, ESNR, eval): losses and
    parameters agree to float rounding. Compiled with aot_eager here (inductor's code generation
    takes minutes on 2 cores; it is compared per path below and on the GPU by gpu_check.sh)."""
    off, p_off, _ = one_epoch(tmp_path, "off", kind, OFF)
    on, p_on, agent = one_epoch(tmp_path, "on", kind, [*ON, "perf.compile_backend=aot_eager"])
    assert agent.perf.compile and agent.perf.device_metrics and agent.perf.fused_adam
    assert_records_close(off, on, rtol=2e-3)
    assert off[-1]["wm_loss"] != 0 and "critic_grad_norm" in on[-1]
    for k in p_off:
        torch.testing.assert_close(p_on[k], p_off[k], rtol=2e-3, atol=2e-4, msg=k)


def test_device_metrics_alone_change_nothing(tmp_path):
    """Metrics kept on the device and synced once per epoch: bit-identical training and logs."""
    off, p_off, _ = one_epoch(tmp_path, "off", "flow", OFF)
    on, p_on, _ = one_epoch(tmp_path, "on", "flow", [*OFF, "perf.device_metrics=true", "perf.fused_adam=true"])
    assert_records_close(off, on, rtol=1e-12)
    for k in p_off:
        assert torch.equal(p_on[k], p_off[k]), k


def test_host_means_brings_tensor_metrics_to_the_host_as_floats():
    updates = [{"a": torch.tensor(1.0), "b": 2.0, "nfe": 4}, {"a": torch.tensor(3.0, dtype=torch.float64), "b": 4.0,
                                                            "nfe": 4}]
    out = host_means(updates)
    assert out == {"a": 2.0, "b": 3.0, "nfe": 4.0} and all(type(v) is float for v in out.values())
    assert host_means([]) == {}


def test_perf_auto_resolves_per_device():
    cpu = perf.resolve({"fused_adam": "auto", "tf32": "auto"}, "cpu")
    assert not cpu.fused_adam and not cpu.tf32 and cpu.device_metrics and not cpu.compile
    cuda = perf.resolve({"fused_adam": "auto", "tf32": "auto"}, "cuda")
    assert cuda.fused_adam and cuda.tf32
    assert perf.resolve({"tf32": True}, "cpu").tf32 is False  # never on the CPU
    assert perf.resolve(None, "cuda") == perf.LEGACY


# -- each compiled path against eager ---------------------------------------------------------------
def agents(kind, backend, horizon=3):
    alg = load_alg("pwm_tiny_flow" if kind == "flow" else "pwm_tiny")
    alg.horizon, alg.critic_iterations, alg.critic_batches = horizon, 1, 2
    torch.manual_seed(0)
    eager = PWM(alg, 5, 2, perf=perf.Perf(device_metrics=True))
    torch.manual_seed(0)
    fast = PWM(alg, 5, 2, perf=perf.Perf(device_metrics=True, compile=True, compile_backend=backend))
    return eager, fast


def assert_same_updates(update_eager, update_fast, steps=3):
    for step in range(steps):  # the first call runs eagerly (it counts velocity calls), then compiled
        torch.manual_seed(step)
        m_eager = update_eager()
        torch.manual_seed(step)
        m_fast = update_fast()
        assert m_fast.keys() == m_eager.keys()
        for k in m_eager:
            assert float(m_fast[k]) == pytest.approx(float(m_eager[k]), rel=1e-4, abs=1e-6), (step, k)


# aot_eager runs the graphs torch.compile captures (the capture is where our code can go wrong:
# graph breaks, guards, random numbers, the velocity-call counter); inductor, the production
# backend, generates C++ for them, minutes on 2 cores for H=3: once, for the flow model at H=1.
@pytest.mark.parametrize("kind,backend,H", [("mlp", "aot_eager", 3), ("flow", "aot_eager", 3), ("flow", "inductor", 1)])
def test_compiled_updates_match_eager(kind, backend, H, same_random_numbers):
    """World-model update, actor rollout + update and critic update: compiled == eager, each
    path one graph (the flow integrator's substeps and the H-step rollouts unrolled, no graph
    break, no recompile)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager, fast = agents(kind, backend, H)
    g = torch.Generator().manual_seed(1)
    obs, action, reward = torch.randn(H + 1, 16, 5, generator=g), torch.rand(H, 16, 2, generator=g) * 2 - 1, \
        torch.randn(H, 16, 1, generator=g)
    assert_same_updates(lambda: eager.update_world_model(obs, action, reward),
                        lambda: fast.update_world_model(obs, action, reward))
    assert_same_updates(lambda: eager.update_policy(obs[0]), lambda: fast.update_policy(obs[0]))
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 4  # world-model loss, imagined rollout, critic loss, TD(λ)
    assert isinstance(fast._imagine, perf.NfeCounted)
    if kind == "flow":  # velocity calls counted as eager code counts them
        assert fast.wm.nfe == eager.wm.nfe > 0 and fast._imagine.calls == H * fast.wm.nfe_per_step
    for a, b in ((eager.wm, fast.wm), (eager.actor, fast.actor), (eager.critic, fast.critic)):
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


def test_bench_world_model_passes_no_json_path_to_its_children():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "bench_world_model.py"
    spec = importlib.util.spec_from_file_location("bench_world_model", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for argv in (["--json", "out file.json", "--size", "tiny"], ["--json=out.json", "--size=tiny"]):
        child = bench.child_args(bench.parser().parse_args(argv))
        assert "--size=tiny" in child and not any("out" in a or "json" in a for a in child), child
        assert bench.parser().parse_args([*child, "--variant", "mlp"]).size == "tiny"  # a child parses them
