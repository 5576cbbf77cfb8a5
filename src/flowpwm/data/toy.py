"""Small systems with known dynamics, for fitting checks, tests and the demo.

`ToyOscillator`: controlled damped oscillators seen through a fixed random linear map, with
a smooth reward; fixed-length episodes kept in memory. `SimplexMixing`: a known map directly
on SimNorm latents, for checking a velocity field in isolation.
"""

from __future__ import annotations

import math

import torch


class ToyOscillator:
    def __init__(self, obs_dim: int = 12, action_dim: int = 2, oscillators: int = 2, seed: int = 0,
                 damping: float = 0.03, dt: float = 0.2):
        g = torch.Generator().manual_seed(seed)
        self.state_dim = 2 * oscillators
        self.obs_dim, self.action_dim = obs_dim, action_dim
        A = torch.zeros(self.state_dim, self.state_dim)
        for i in range(oscillators):
            w = dt * (1.0 + i)  # distinct frequencies
            c, s = math.cos(w), math.sin(w)
            A[2 * i:2 * i + 2, 2 * i:2 * i + 2] = (1 - damping) * torch.tensor([[c, -s], [s, c]])
        self.A = A
        self.B = 0.3 * torch.randn(self.state_dim, action_dim, generator=g)
        self.C = torch.randn(obs_dim, self.state_dim, generator=g) / math.sqrt(self.state_dim)
        self.generator = g

    def reward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.exp(-x.pow(2).sum(-1, keepdim=True)) - 0.1 * a.pow(2).sum(-1, keepdim=True)

    def terminal(self, x: torch.Tensor) -> torch.Tensor:
        """A known termination rule for episodic checks: the first oscillator's position above 0.5."""
        return (x[..., :1] > 0.5).float()

    def rollout(self, episodes: int, length: int) -> dict[str, torch.Tensor]:
        """Random-action episodes: obs (T+1, E, obs_dim), action (T, E, A), reward (T, E, 1) and
        `terminal(x_{t+1})` (T, E, 1) as termination flags (the episodes go on regardless)."""
        x = torch.randn(episodes, self.state_dim, generator=self.generator)
        xs, acts, rews, terms = [x], [], [], []
        for _ in range(length):
            a = 2 * torch.rand(episodes, self.action_dim, generator=self.generator) - 1
            rews.append(self.reward(x, a))
            x = x @ self.A.T + a @ self.B.T
            xs.append(x)
            acts.append(a)
            terms.append(self.terminal(x))
        obs = torch.stack(xs) @ self.C.T
        return {"obs": obs, "action": torch.stack(acts), "reward": torch.stack(rews), "terminated": torch.stack(terms)}


def sample_windows(data: dict[str, torch.Tensor], batch: int, horizon: int,
                   generator: torch.Generator | None = None, terminated: bool = False) -> tuple[torch.Tensor, ...]:
    """Random (horizon+1)-step windows of fixed-length episodes, time-major like the buffer:
    obs, action, reward (and the termination flags, given `terminated`)."""
    T, E = data["action"].shape[:2]
    ep = torch.randint(E, (batch,), generator=generator)
    t0 = torch.randint(T - horizon + 1, (batch,), generator=generator)
    steps = t0[None] + torch.arange(horizon + 1)[:, None]  # (H+1, B)
    obs = data["obs"][steps, ep]
    out = (obs, data["action"][steps[:-1], ep], data["reward"][steps[:-1], ep])
    return out + (data["terminated"][steps[:-1], ep],) if terminated else out


class SimplexMixing:
    """z' = (1-α) z + α roll(z) inside every SimNorm group, α = 0.5·sigmoid(a·w).

    Column-stochastic, so z' stays on the simplex; straight paths from z to z' do too."""

    def __init__(self, latent_dim: int = 16, simnorm_dim: int = 8, action_dim: int = 2, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.latent_dim, self.simnorm_dim, self.action_dim = latent_dim, simnorm_dim, action_dim
        self.w = torch.randn(action_dim, generator=g)
        self.generator = g

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits = 2 * torch.randn(n, self.latent_dim // self.simnorm_dim, self.simnorm_dim, generator=self.generator)
        z = torch.softmax(logits, -1).reshape(n, self.latent_dim)
        a = 2 * torch.rand(n, self.action_dim, generator=self.generator) - 1
        return z, a

    def __call__(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        alpha = 0.5 * torch.sigmoid(a @ self.w)[..., None, None]
        g = z.reshape(*z.shape[:-1], -1, self.simnorm_dim)
        return ((1 - alpha) * g + alpha * g.roll(1, dims=-1)).reshape(z.shape)
