"""Small world models and batches shared by the tests."""

import torch
from omegaconf import OmegaConf

from flowpwm.config import load_alg
from flowpwm.models.factory import build_world_model


def tiny_cfg(kind: str, **overrides):
    cfg = load_alg("pwm_tiny_flow" if kind == "flow" else "pwm_tiny").world_model
    return OmegaConf.merge(cfg, overrides)


def tiny_wm(kind: str, obs_dim=6, action_dim=2, **overrides):
    return build_world_model(tiny_cfg(kind, **overrides), obs_dim, action_dim)


def batch(H=4, B=32, obs_dim=6, action_dim=2, reward_scale=1.0):
    obs = torch.randn(H + 1, B, obs_dim)
    action = torch.rand(H, B, action_dim) * 2 - 1
    reward = reward_scale * (obs[:-1, :, :1].tanh() + 0.5)
    return obs, action, reward


def wandb_records(path):
    """Records of a W&B transaction log (.wandb): LevelDB-style 32 KiB blocks of chunks, each
    with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, block = open(path, "rb").read(), 32 * 1024
    if len(data) < 7:  # not written yet
        return []
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, parts, out = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # block padding
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            out.append(record)
    return out


def wandb_history(run_dir):
    """(run id, logged rows) of an offline W&B run directory; values decoded from JSON."""
    import json

    import time

    (log,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + 30
    records = wandb_records(log)
    while not any(r.WhichOneof("record_type") == "exit" for r in records) and time.monotonic() < deadline:
        time.sleep(0.2)  # wandb-core writes the log in its own process; wait for the run's end
        records = wandb_records(log)
    run_id, rows = None, []
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run_id = r.run.run_id
        elif kind == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
    return run_id, rows


def fit_flow_to_map(target, iters=1500, batch_size=256, lr=2e-3, **flow_kwargs):
    """A FlowWorldModel on SimNorm latents whose velocity is fitted (flow-matching loss) to a
    known latent map `target` (e.g. data.toy.SimplexMixing: `target.sample(n)`, `target(z, a)`)."""
    from flowpwm.integrators import compute_flow_matching_loss
    from flowpwm.models import FlowWorldModel

    kw = {"integrator": "heun", "substeps": 2, "tangent_projection": True, "velocity_units": [128, 128], **flow_kwargs}
    wm = FlowWorldModel(obs_dim=4, action_dim=target.action_dim, latent_dim=target.latent_dim, encoder_units=[32],
                        units=[32, 32], simnorm_dim=target.simnorm_dim, **kw)
    opt = torch.optim.Adam(wm._velocity.parameters(), lr=lr)
    for _ in range(iters):
        z, a = target.sample(batch_size)
        loss = compute_flow_matching_loss(wm.velocity_fn(a), z, target(z, a)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return wm
