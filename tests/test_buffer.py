import io
from collections import Counter

import pytest
import torch

from flowpwm.data.buffer import ReplayBuffer


class CountingEnvs:
    """N autoresetting envs whose observation is (env, episode, t), so slices can be checked.

    Episode lengths are random per env (1..max_len), so envs end at different times; an episode
    that reaches max_len is truncated, a shorter one terminates. The action echoes the observation
    and the reward encodes (episode, t), so a test can check that they line up with the obs."""

    obs_dim = action_dim = 3

    def __init__(self, num_envs: int, max_len: int = 9, seed: int = 0):
        self.N, self.max_len = num_envs, max_len
        self.g = torch.Generator().manual_seed(seed)
        self.env = torch.arange(num_envs)
        self.ep = torch.zeros(num_envs, dtype=torch.long)
        self.t = torch.zeros(num_envs, dtype=torch.long)
        self.length = self._lengths(num_envs)
        self.ends: dict[tuple[int, int], tuple[int, bool]] = {}  # (env, ep) -> (length, terminated)

    def _lengths(self, n: int) -> torch.Tensor:
        return torch.randint(1, self.max_len + 1, (n,), generator=self.g)

    def _obs(self) -> torch.Tensor:
        return torch.stack([self.env, self.ep, self.t], -1).float()

    def reset(self) -> torch.Tensor:
        return self._obs()

    def step(self, action: torch.Tensor):
        reward = (1000 * self.ep + self.t).float()
        self.t = self.t + 1
        final_obs = self._obs()
        ended = self.t == self.length
        truncated = ended & (self.length == self.max_len)
        terminated = ended & ~truncated
        for e in ended.nonzero().flatten().tolist():
            self.ends[(e, int(self.ep[e]))] = (int(self.length[e]), bool(terminated[e]))
        self.ep = torch.where(ended, self.ep + 1, self.ep)
        self.t = torch.where(ended, 0, self.t)
        self.length = torch.where(ended, self._lengths(self.N), self.length)
        return self._obs(), reward, terminated, truncated, final_obs


def fill(buf: ReplayBuffer, envs: CountingEnvs, steps: int, obs: torch.Tensor | None = None,
         history: list | None = None) -> torch.Tensor:
    """The trainer's loop: act from obs, store final_obs as next_obs, continue from the reset obs."""
    obs = envs.reset() if obs is None else obs
    for _ in range(steps):
        action = obs.clone()
        next_obs, reward, term, trunc, final_obs = envs.step(action)
        buf.add(obs, action, reward, final_obs, term, trunc)
        if history is not None:
            history.append((obs.clone(), term | trunc))
        obs = next_obs
    return obs


def check_slices(batch: dict, envs: CountingEnvs) -> int:
    """Assert every slice is one episode's consecutive steps; return how many reach its end."""
    obs = batch["obs"]
    env, ep, t = obs[..., 0], obs[..., 1], obs[..., 2]
    assert (env == env[:1]).all() and (ep == ep[:1]).all(), "slice crosses episodes or envs"
    assert (t[1:] - t[:-1] == 1).all(), "slice is not consecutive in time"
    assert torch.equal(batch["action"], obs[:-1]), "actions misaligned with obs"
    assert torch.equal(batch["reward"][..., 0], 1000 * ep[:-1] + t[:-1]), "rewards misaligned with obs"
    reaching_end = 0
    for b in range(obs.shape[1]):
        e, k, last_t = int(env[0, b]), int(ep[0, b]), int(t[-1, b])
        length, terminated = envs.ends.get((e, k), (None, False))
        assert length is None or last_t <= length, "slice runs past its episode's final obs"
        ends_here = last_t == length
        reaching_end += ends_here
        expected = torch.zeros(obs.shape[0] - 1)
        expected[-1] = float(ends_here and terminated)
        assert torch.equal(batch["terminated"][:, b, 0], expected)
    return reaching_end


def test_slices_never_cross_episode_ends():
    H, N = 4, 6
    envs = CountingEnvs(N, max_len=7)
    buf = ReplayBuffer(capacity=40 * N, num_envs=N, obs_dim=3, action_dim=3)
    g = torch.Generator().manual_seed(1)
    obs, reaching_end = None, 0
    # Sample at several fill levels and ring positions, including after wrap-around.
    for steps in (10, 25, 30, 37):
        obs = fill(buf, envs, steps, obs)
        reaching_end += check_slices(buf.sample(1000, H, generator=g), envs)
    terms = [term for _, term in envs.ends.values()]
    assert any(terms) and not all(terms), "stream should both terminate and truncate"
    assert reaching_end > 100, "slices ending at an episode end should be drawn"


def test_sample_shapes_and_dtypes():
    N, H, B = 3, 5, 7
    buf = ReplayBuffer(capacity=60, num_envs=N, obs_dim=3, action_dim=3)
    fill(buf, CountingEnvs(N, max_len=50), 12)
    batch = buf.sample(B, H)
    assert set(batch) == {"obs", "action", "reward", "terminated", "mask"}
    assert batch["obs"].shape == (H + 1, B, 3)
    assert batch["action"].shape == (H, B, 3)
    assert batch["reward"].shape == (H, B, 1)
    assert batch["terminated"].shape == (H, B, 1)
    for v in batch.values():
        assert v.dtype == torch.float32 and v.device == buf.device


def test_ring_wraparound_keeps_only_newest_and_never_straddles_write_pointer():
    N, rows, H = 3, 10, 4
    envs = CountingEnvs(N, max_len=1000)  # no episode ends: only the ring boundary cuts slices
    buf = ReplayBuffer(capacity=rows * N, num_envs=N, obs_dim=3, action_dim=3)
    obs = fill(buf, envs, 37)
    assert len(buf) == rows * N and buf.ptr == 37 % rows
    assert buf.num_valid_starts(H) == (rows - H + 1) * N
    batch = buf.sample(2000, H, generator=torch.Generator().manual_seed(0))
    check_slices(batch, envs)
    assert batch["obs"][0, :, 2].min() == 37 - rows, "overwritten rows were sampled"
    # A full-ring slice has one valid start per env: the oldest row, read across the physical end.
    batch = buf.sample(200, rows, generator=torch.Generator().manual_seed(0))
    check_slices(batch, envs)
    assert (batch["obs"][0, :, 2] == 37 - rows).all() and (batch["obs"][-1, :, 2] == 37).all()
    fill(buf, envs, 100, obs)
    assert len(buf) == rows * N


def test_capacity_rounds_down_to_whole_rows():
    buf = ReplayBuffer(capacity=17, num_envs=4, obs_dim=3, action_dim=3)
    fill(buf, CountingEnvs(4), 9)
    assert buf.rows == 4 and len(buf) == 16


def test_every_valid_start_is_drawn_uniformly_and_invalid_ones_never():
    N, rows, H = 3, 12, 3
    envs = CountingEnvs(N, max_len=5, seed=3)
    buf = ReplayBuffer(capacity=rows * N, num_envs=N, obs_dim=3, action_dim=3)
    history: list = []
    fill(buf, envs, 29, history=history)  # wraps, with episode ends inside the window
    # Brute force over the stored window: start (step s, env e) is valid iff steps s..s+H-2 end nothing.
    stored = history[-rows:]
    expected = {
        tuple(int(v) for v in stored[s][0][e])
        for s in range(rows - H + 1) for e in range(N)
        if not any(bool(stored[s + k][1][e]) for k in range(H - 1))
    }
    assert buf.num_valid_starts(H) == len(expected)
    draws = 40 * len(expected)
    batch = buf.sample(draws, H, generator=torch.Generator().manual_seed(0))
    check_slices(batch, envs)
    counts = Counter(tuple(int(v) for v in o) for o in batch["obs"][0])
    assert set(counts) == expected
    assert min(counts.values()) > 10 and max(counts.values()) < 80  # mean 40: roughly uniform


def test_state_dict_round_trip_restores_exactly():
    N, H = 4, 3
    envs = CountingEnvs(N, max_len=6)
    buf = ReplayBuffer(capacity=20 * N, num_envs=N, obs_dim=3, action_dim=3)
    obs = fill(buf, envs, 27)  # wrapped, ptr mid-ring
    buf.sample(8, H)  # populate the validity cache; the copy must not depend on it
    blob = io.BytesIO()
    torch.save(buf.state_dict(), blob)
    blob.seek(0)
    restored = ReplayBuffer(capacity=20 * N, num_envs=N, obs_dim=3, action_dim=3)
    restored.load_state_dict(torch.load(blob))
    assert len(restored) == len(buf)  # rows are stored oldest first: the ring position may differ

    def same_samples():
        a = buf.sample(64, H, generator=torch.Generator().manual_seed(5))
        b = restored.sample(64, H, generator=torch.Generator().manual_seed(5))
        assert all(torch.equal(a[k], b[k]) for k in a)

    same_samples()
    # The ring order is restored too: continuing both with identical steps keeps them identical.
    for target in (buf, restored):
        fill(target, CountingEnvs(N, max_len=6, seed=9), 5, obs)
    same_samples()

    with pytest.raises(ValueError, match="this buffer holds 10"):
        ReplayBuffer(capacity=10 * N, num_envs=N, obs_dim=3, action_dim=3).load_state_dict(buf.state_dict())
    with pytest.raises(ValueError, match="obs_dim"):
        ReplayBuffer(capacity=20 * N, num_envs=N, obs_dim=4, action_dim=3).load_state_dict(buf.state_dict())


def test_state_dict_holds_only_the_filled_rows():
    N = 4
    envs = CountingEnvs(N, max_len=6)
    buf = ReplayBuffer(capacity=1000 * N, num_envs=N, obs_dim=3, action_dim=3)
    fill(buf, envs, 7)
    state = buf.state_dict()
    assert all(state[k].shape[0] == 7 for k in ("obs", "action", "reward", "next_obs", "done", "terminated"))
    blob = io.BytesIO()
    torch.save(state, blob)
    assert blob.tell() < 8_000  # 7 rows, not the 1000 preallocated (a view would save the whole storage)
    restored = ReplayBuffer(capacity=1000 * N, num_envs=N, obs_dim=3, action_dim=3)
    blob.seek(0)
    restored.load_state_dict(torch.load(blob, weights_only=True))
    a = buf.sample(32, 2, generator=torch.Generator().manual_seed(1))
    b = restored.sample(32, 2, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sample_raises_until_a_valid_slice_exists():
    N, H = 2, 4
    buf = ReplayBuffer(capacity=20, num_envs=N, obs_dim=3, action_dim=3)
    with pytest.raises(ValueError, match="no valid"):
        buf.sample(4, H)
    envs = CountingEnvs(N, max_len=1000)
    obs = fill(buf, envs, H - 1)
    with pytest.raises(ValueError, match="no valid"):
        buf.sample(4, H)
    fill(buf, envs, 1, obs)
    assert buf.sample(4, H)["obs"].shape == (H + 1, 4, 3)
    with pytest.raises(ValueError, match="horizon"):
        buf.sample(4, 0)


def test_sample_raises_when_every_step_ends_an_episode():
    buf = ReplayBuffer(capacity=20, num_envs=2, obs_dim=3, action_dim=3)
    fill(buf, CountingEnvs(2, max_len=1), 10)
    assert buf.sample(4, 1)["obs"].shape == (2, 4, 3)  # one step ending at its episode end is fine
    with pytest.raises(ValueError, match="no valid"):
        buf.sample(4, 2)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=3, num_envs=4, obs_dim=3, action_dim=3)
    buf = ReplayBuffer(capacity=8, num_envs=2, obs_dim=3, action_dim=1)
    o, f = torch.zeros(2, 3), torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="action"):
        buf.add(o, torch.zeros(2, 3), torch.zeros(2), o, f, f)
    buf.add(o, torch.zeros(2, 1), torch.zeros(2, 1), o, f, f)  # (N, 1) rewards are accepted
    assert len(buf) == 2


def test_through_terminal_slices_carry_terminations_at_every_position_and_mask_the_rest():
    """Episodic tasks: a slice may run into a termination (never a truncation); its steps up to
    and including the terminal one are the episode's, the rest are masked out."""
    H, N = 5, 6
    envs = CountingEnvs(N, max_len=7)
    buf = ReplayBuffer(capacity=60 * N, num_envs=N, obs_dim=3, action_dim=3)
    fill(buf, envs, 55)
    g = torch.Generator().manual_seed(2)
    assert buf.num_valid_starts(H) < buf._valid_starts(H, through_terminal=True).numel()
    batch = buf.sample(4000, H, generator=g, through_terminal=True)
    obs, mask, term = batch["obs"], batch["mask"][..., 0], batch["terminated"][..., 0]
    positions = set()
    for b in range(obs.shape[1]):
        valid = int(mask[:, b].sum())
        e, k = int(obs[0, b, 0]), int(obs[0, b, 1])
        # the valid part is one episode's consecutive steps, its obs[t+1] the true next obs
        assert (obs[:valid + 1, b, 1] == k).all() and (obs[1:valid + 1, b, 2] - obs[:valid, b, 2] == 1).all()
        assert torch.equal(batch["action"][:valid, b], obs[:valid, b])
        if valid < H:  # cut short: by a termination, at the last valid step
            length, terminated = envs.ends[(e, k)]
            assert terminated and term[valid - 1, b] == 1 and int(obs[valid, b, 2]) == length
            positions.add(valid - 1)
        assert (mask[:valid, b] == 1).all() and (mask[valid:, b] == 0).all()
    assert positions == set(range(H - 1)), "terminations appear at every inner position"
    # without through_terminal, the old contract: full slices only
    assert (buf.sample(500, H, generator=g)["mask"] == 1).all()
