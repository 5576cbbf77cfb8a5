"""PWM: a policy trained with first-order gradients through a learned latent world model.

Per epoch the trainer calls `update_world_model` on replay slices, then `update_policy` on
real start states: the actor loss rolls the world model (MLP or flow, whichever the config
builds) H steps forward, sums discounted predicted rewards and bootstraps with the minimum
over the critic ensemble; the critic regresses TD(λ) targets of that imagined trajectory.
With `target_critic_alpha` > 0 the bootstrap values (the actor's and the targets') come from a
Polyak-averaged copy of the critic instead, as in SHAC (PWM: 0, the critic being trained).

Episodic tasks (`episodic`: the world model has a termination head): after a predicted
termination, imagined rewards and the bootstrap stop counting and TD(λ) does not bootstrap
through the terminal step. `termination_mask` says how: `soft` weights step t by the
continuation probability Π_{k≤t}(1 - p_k) (differentiable), `hard` by TD-MPC2's cumulative
mask Π 1[p_k ≤ 0.5] (no gradient through the mask).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn as nn
from omegaconf import DictConfig

from flowpwm import perf as perf_lib
from flowpwm.algorithms.running_stats import RunningMeanStd
from flowpwm.esnr import compute_esnr
from flowpwm.losses import compute_wm_loss, wm_loss_kwargs
from flowpwm.models.actor import Actor, saturation
from flowpwm.models.critic import Critic
from flowpwm.models.factory import build_world_model


TERMINATION_MASKS = ("soft", "hard")


@contextmanager
def frozen(*modules: nn.Module):
    """No parameter gradients for these modules (inputs still get theirs): the actor's
    backward pass skips the world model's and critic's weights."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class PWM:
    def __init__(self, alg: DictConfig, obs_dim: int, action_dim: int, device="cpu",
                 num_tasks: int = 1, action_dims=None, episodic: bool = False, perf=None):
        """`perf`: the `perf:` config section (or `perf.Perf`); None: eager, float metrics."""
        self.cfg, self.device = alg, torch.device(device)
        self.perf = perf_lib.resolve(perf, self.device)
        perf_lib.apply_matmul_precision(self.perf, self.device)
        self.horizon, self.gamma, self.lam = int(alg.horizon), float(alg.gamma), float(alg.lam)
        # The world model's training slices are `horizon` steps; the actor imagines `imagine_horizon`
        # (absent in older configs: the same), so the two can be set apart.
        self.imagine_horizon = int(alg.get("imagine_horizon") or self.horizon)
        # imagine_horizon_from: online, the actor imagines `horizon` steps until this many env steps,
        # then `imagine_horizon` (see set_env_steps); absent in older configs: from the start.
        switch = alg.get("imagine_horizon_from")
        self.horizon_switch = (None if switch is None else int(switch), self.imagine_horizon)
        self.loss_kwargs = wm_loss_kwargs(alg)
        self.episodic, self.termination_mask = bool(episodic), str(alg.get("termination_mask", "soft"))
        if self.termination_mask not in TERMINATION_MASKS:
            raise ValueError(f"termination_mask={self.termination_mask!r}: use one of {list(TERMINATION_MASKS)}")
        self.wm = build_world_model(alg.world_model, obs_dim, action_dim, num_tasks, action_dims,
                                    episodic=self.episodic).to(self.device)
        latent = int(alg.world_model.latent_dim)
        self.actor = Actor(latent, action_dim, units=list(alg.actor.units), init_logstd=alg.actor.init_logstd,
                           min_logstd=alg.actor.min_logstd).to(self.device)
        self.explore_logstd = alg.actor.get("explore_logstd")  # absent in configs older than the key: None, as they ran
        self.saturation_coef = float(alg.actor.get("saturation_coef", 0.0))  # absent in older configs: PWM, none
        self.floor_schedule = (float(alg.actor.min_logstd), alg.actor.get("min_logstd_final"),  # absent: fixed
                               int(alg.actor.get("min_logstd_steps", 1)))
        self.critic = Critic(latent, units=list(alg.critic.units), num_critics=int(alg.critic.num_critics)).to(self.device)
        # The network the imagined rollouts bootstrap from: the critic itself (PWM), or its slow
        # copy (SHAC's target critic), which keeps a critic spike from feeding its own targets.
        self.target_alpha = float(alg.get("target_critic_alpha", 0.0))  # absent in older configs: PWM
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False) if self.target_alpha > 0 else None
        self.value_critic = self.critic_target if self.critic_target is not None else self.critic
        # wm.parameters() includes the task embedding (a trap in public forks).
        adam = lambda params, **kw: perf_lib.adam(params, self.perf, self.device, **kw)  # noqa: E731
        self.wm_opt = adam(self.wm.parameters(), lr=alg.model_lr)
        self.actor_opt = adam(self.actor.parameters(), lr=alg.actor_lr, betas=(0.7, 0.95))
        self.critic_opt = adam(self.critic.parameters(), lr=alg.critic_lr, betas=(0.7, 0.95))
        self.ret_rms = RunningMeanStd(device=self.device) if alg.ret_rms else None
        self.detach = bool(alg.detach)
        # perf.compile: the world-model loss, the imagined rollout and the critic loss compiled
        # (static shapes; CUDA graphs with mode reduce-overhead); else these are the methods.
        self._wm_loss = perf_lib.compiled(self.compute_wm_loss, self.perf, self.wm)
        self._imagine = perf_lib.compiled(self.imagine, self.perf, self.wm)
        self._critic_loss = perf_lib.compiled(self.critic_loss, self.perf, self.wm)
        self._td_targets = perf_lib.compiled(self.td_lambda_targets, self.perf, self.wm)
        self.set_env_steps(0)  # the schedules' starting point

    def _metric(self, x):
        """A scalar metric: a detached device tensor (perf.device_metrics) or a float."""
        return perf_lib.metric(x, self.perf) if isinstance(x, torch.Tensor) else x

    # -- world model ------------------------------------------------------------------------
    def compute_wm_loss(self, obs, action, reward, task=None, terminated=None, mask=None):
        """MLP: multi-step latent rollout loss; flow: flow-matching loss (see losses.py); plus
        the termination loss of an episodic world model (`mask`: the steps up to a slice's
        terminal step)."""
        return compute_wm_loss(self.wm, obs, action, reward, task, terminated=terminated, mask=mask,
                               **self.loss_kwargs)

    def update_world_model(self, obs, action, reward, task=None, terminated=None, mask=None) -> dict[str, float]:
        perf_lib.step_begin(self.perf)
        loss, metrics = self._wm_loss(obs, action, reward, task, terminated, mask)
        self.wm_opt.zero_grad(set_to_none=True)
        loss.backward()
        metrics["wm_grad_norm"] = nn.utils.clip_grad_norm_(self.wm.parameters(), self.cfg.wm_grad_norm)
        self.wm_opt.step()
        return {k: self._metric(v) for k, v in metrics.items()}

    # -- actor ------------------------------------------------------------------------------
    def continuation(self, z: torch.Tensor, task=None) -> torch.Tensor:
        """Probability (soft) or indicator (hard, no gradient) that latent z is not terminal, (B,)."""
        p = torch.sigmoid(self.wm.termination(z, task)).squeeze(-1)
        return 1 - p if self.termination_mask == "soft" else (p <= 0.5).to(p.dtype)

    def compute_actor_loss(self, obs0: torch.Tensor, task=None, update_stats: bool = True):
        """Imagined H-step return from real start states, normalised by the running return std
        (updated with these returns unless `update_stats` is False).

        With `actor.saturation_coef` = c > 0 the loss adds c × the mean `saturation` of the sampled
        pre-tanh actions (per action dimension and imagined step): a restoring push off tanh's
        flat tails, where the return's gradient through tanh vanishes.

        Returns (loss, the critic's TD(λ) data, imagined returns (B,)); the data, all detached:
        latents z_0..z_{H-1} (H, B, L), rewards (H, B), bootstrap values V(z_{t+1}) (H, B),
        `saturation` (B,) (see `actor.saturation`) and, for episodic models, `cont` (H, B): the
        continuation of z_{t+1} (1 - p or the mask), else None."""
        with torch.no_grad():
            z = self.wm.encode(obs0, task)
        with frozen(self.wm, self.critic):
            perf_lib.step_begin(self.perf)
            ret, data = self._imagine(z, task)
        if self.perf.cudagraphs:  # graph outputs are overwritten by the next replay
            ret, data = ret.clone(), {k: v if v is None else v.clone() for k, v in data.items()}
        if self.ret_rms is not None:
            if update_stats:
                self.ret_rms.update(ret)
            loss = -(ret / self.ret_rms.std.float()).mean()
        else:
            loss = -(ret / self.imagine_horizon).mean()
        if self.saturation_coef > 0:
            loss = loss + self.saturation_coef * data["saturation"].mean()
        data["saturation"] = data["saturation"].detach()
        return loss, data, ret.detach()

    def imagine(self, z: torch.Tensor, task=None):
        """The actor's H-step rollout through the world model from latents z (B, L) (called with
        the world model and critic frozen): the discounted imagined return with its bootstrap (B,),
        with gradient, and the critic's data (see `compute_actor_loss`)."""
        zs, us, rews, values, conts = [], [], [], [], []
        ret = torch.zeros(z.shape[0], device=z.device)
        alive = torch.ones_like(ret)  # probability (or mask) that no termination happened before step t
        for t in range(self.imagine_horizon):
            zs.append(z.detach())
            u = self.actor.pre_tanh(z.detach() if self.detach else z)
            us.append(u)
            a = self.wm.mask_action(torch.tanh(u), task)
            r = self.wm.reward_value(z, a, task).squeeze(-1)
            z = self.wm.next(z, a, task)
            v = self.value_critic.min_value(z).squeeze(-1)
            ret = ret + self.gamma ** t * alive * r
            if self.episodic:
                cont = self.continuation(z, task)
                alive = alive * cont
                conts.append(cont.detach())
            rews.append(r.detach())
            values.append(v.detach())
        ret = ret + self.gamma ** self.imagine_horizon * alive * v
        real = self.wm.mask_action(torch.ones_like(u), task)  # the task's own action dimensions
        sat = (saturation(torch.stack(us)) * real).sum(-1) / real.sum(-1)  # (H, B), per action dimension
        data = {"zs": torch.stack(zs), "rewards": torch.stack(rews), "values": torch.stack(values),
                "cont": torch.stack(conts) if self.episodic else None, "saturation": sat.mean(0)}
        return ret, data

    @torch.no_grad()
    def td_lambda_targets(self, rewards: torch.Tensor, values: torch.Tensor,
                          cont: torch.Tensor | None = None) -> torch.Tensor:
        """G_t = r_t + γ c_t ((1-λ) V(z_{t+1}) + λ G_{t+1}), G_{H-1} = r_{H-1} + γ c_{H-1} V(z_H),
        c_t the continuation of z_{t+1} (1 without termination): nothing is bootstrapped through
        a terminal step."""
        cont = torch.ones_like(rewards) if cont is None else cont
        targets = torch.empty_like(rewards)
        H = rewards.shape[0]
        for t in reversed(range(H)):
            ahead = values[t] if t == H - 1 else (1 - self.lam) * values[t] + self.lam * targets[t + 1]
            targets[t] = rewards[t] + self.gamma * cont[t] * ahead
        return targets

    def update_critic(self, zs: torch.Tensor, targets: torch.Tensor,
                      weights: torch.Tensor | None = None) -> dict[str, float]:
        """Regress the TD(λ) targets; `weights` (H, B) (the probability that z_t is still alive
        in an episodic rollout) weight each state's squared error."""
        z, y = zs.reshape(-1, zs.shape[-1]), targets.reshape(-1, 1)
        w = None if weights is None else weights.reshape(-1, 1)
        n, batches = z.shape[0], int(self.cfg.critic_batches)
        losses, norms = [], []
        for _ in range(int(self.cfg.critic_iterations)):
            for idx in torch.randperm(n, device=self.device).chunk(batches):
                perf_lib.step_begin(self.perf)
                loss = self._critic_loss(z[idx], y[idx], None if w is None else w[idx])
                self.critic_opt.zero_grad(set_to_none=True)
                loss.backward()
                norms.append(self._metric(nn.utils.clip_grad_norm_(self.critic.parameters(), self.cfg.critic_grad_norm)))
                self.critic_opt.step()
                losses.append(self._metric(loss))
        if self.perf.device_metrics:
            return {"critic_loss": torch.stack(losses).double().mean(), "critic_grad_norm": torch.stack(norms).double().mean()}
        return {"critic_loss": sum(losses) / len(losses), "critic_grad_norm": sum(norms) / len(norms)}

    def critic_loss(self, z: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """Squared error of every ensemble member's V(z) against targets y (N, 1), weighted by w
        (N, 1) when given."""
        err = (self.critic(z) - y).pow(2)
        return err.mean() if w is None else (err * w).sum() / w.sum().clamp(min=1e-6) / err.shape[-1]

    def update_policy(self, obs0: torch.Tensor, task=None, action0: torch.Tensor | None = None,
                      bc_coef: float = 0.0) -> dict[str, float]:
        """One actor step and `critic_iterations` critic passes on the same imagined rollout.

        With `action0` (B, A), the actions the data took at `obs0`, and bc_coef > 0 the actor's loss
        adds bc_coef × the mean squared distance of its mean action from them, per real action
        dimension (TD3+BC's behaviour term, on PWM's normalised return)."""
        loss, data, ret = self.compute_actor_loss(obs0, task)
        bc = None
        if action0 is not None and bc_coef > 0:
            mean = self.wm.mask_action(self.actor(data["zs"][0], deterministic=True), task)
            real = self.wm.mask_action(torch.ones_like(mean), task)
            bc = (((mean - self.wm.mask_action(action0, task)) ** 2).sum(-1) / real.sum(-1)).mean()
            loss = loss + bc_coef * bc
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = self._metric(nn.utils.clip_grad_norm_(self.actor.parameters(), self.cfg.actor_grad_norm))
        # With device metrics the trainer's once-per-epoch check of every metric catches this.
        if not self.perf.device_metrics and not torch.isfinite(torch.tensor(norm)):
            raise FloatingPointError("actor gradient is not finite")
        self.actor_opt.step()
        m = self._metric
        metrics = {"actor_loss": m(loss), "actor_grad_norm": norm, "imagined_return": m(ret.mean()),
                   "imagined_reward": m(data["rewards"].mean()), "action_std": m(self.actor.std().mean()),
                   "action_saturation": m(data["saturation"].mean())}
        if bc is not None:
            metrics["bc_loss"] = m(bc)
        cont, alive = data["cont"], None
        if cont is not None:
            # z_t is alive when no termination happened among z_1..z_t.
            alive = torch.cat([torch.ones_like(cont[:1]), cont[:-1]]).cumprod(0)
            metrics["imagined_length"] = m(alive.sum(0).mean())
        perf_lib.step_begin(self.perf)
        targets = self._td_targets(data["rewards"], data["values"], cont)
        if self.perf.cudagraphs:  # the critic's graph replays would overwrite it
            targets = targets.clone()
        metrics.update(self.update_critic(data["zs"], targets, alive))
        self.update_critic_target()
        return metrics

    @torch.no_grad()
    def update_critic_target(self) -> None:
        """target ← α·target + (1 − α)·critic, once per actor update (SHAC's cadence)."""
        if self.critic_target is not None:
            for t, p in zip(self.critic_target.parameters(), self.critic.parameters()):
                t.lerp_(p, 1.0 - self.target_alpha)

    def actor_gradient(self, obs0: torch.Tensor, task=None) -> torch.Tensor:
        """The actor loss's gradient, flattened, at the current parameters from these start
        states: one ESNR sample. Nothing is stepped and no statistic is updated."""
        loss = self.compute_actor_loss(obs0, task, update_stats=False)[0]
        params = list(self.actor.parameters())
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])

    def actor_esnr(self, start_states, task=None, seed: int | None = None) -> dict[str, float]:
        """ESNR of the actor gradient over micro-batches of start states at the current
        parameters. The global RNG is forked (and seeded, given `seed`), so the caller's random
        stream is untouched."""
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            if seed is not None:
                torch.manual_seed(seed)
            grads = torch.stack([self.actor_gradient(obs0, task) for obs0 in start_states])
        return compute_esnr(grads)

    def update(self, obs, action, reward, task=None, terminated=None) -> dict[str, float]:
        """Offline step on one batch of slices: world model, then actor and critic from obs[0]."""
        metrics = self.update_world_model(obs, action, reward, task, terminated)
        metrics.update(self.update_policy(obs[0], task))
        return metrics

    # -- acting -----------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False, task=None) -> torch.Tensor:
        """The action to take in the real env: the mean (eval) or a sample (collection). A sample's
        log-std is floored at `actor.explore_logstd` when set: more exploration in the data
        without changing the std the actor is trained with in imagination."""
        z = self.wm.encode(obs.to(self.device), task)
        return self.wm.mask_action(self.actor(z, deterministic, self.explore_logstd), task)

    @torch.no_grad()
    def eval(self, env, episodes: int, seed: int, task=None) -> dict[str, float]:
        """Deterministic policy in the real environment: the mean, min and max of the env's
        episode returns (never the model's) and the mean length, over `episode_returns`."""
        returns, lengths = self.episode_returns(env, episodes, seed, task)
        return {"eval_return": sum(returns) / len(returns), "eval_return_min": min(returns),
                "eval_return_max": max(returns), "eval_length": sum(lengths) / len(lengths),
                "eval_episodes": len(returns)}

    @torch.no_grad()
    def episode_returns(self, env, episodes: int, seed: int, task=None,
                        deterministic: bool = True) -> tuple[list[float], list[int]]:
        """Returns and lengths of `episodes` whole real episodes: the mean action (the eval
        policy) or, with deterministic=False, sampled actions (the collection policy). Each of the
        `env.num_envs` envs runs a fixed number of episodes from reset (`episodes` shared out
        before any starts), so short episodes are not over-counted as they would be by keeping
        the first ones to finish."""
        n = env.num_envs
        quota = [episodes // n + (i < episodes % n) for i in range(n)]
        returns, lengths = [[] for _ in range(n)], [[] for _ in range(n)]
        obs = env.reset(seed=seed)
        ep_ret, ep_len = torch.zeros(n), torch.zeros(n, dtype=torch.long)
        while any(len(r) < q for r, q in zip(returns, quota)):
            obs, reward, terminated, truncated, _ = env.step(self.act(obs, deterministic, task=task).cpu())
            ep_ret += reward
            ep_len += 1
            for i in torch.nonzero(terminated | truncated).flatten().tolist():
                if len(returns[i]) < quota[i]:
                    returns[i].append(ep_ret[i].item())
                    lengths[i].append(int(ep_len[i]))
                ep_ret[i], ep_len[i] = 0.0, 0
        return [r for rs in returns for r in rs], [n for ns in lengths for n in ns]

    # -- learning-rate schedule and checkpoints ---------------------------------------------
    def set_env_steps(self, env_steps: int) -> None:
        """Online exploration schedule: the actor's log-std floor goes linearly from
        `actor.min_logstd` to `actor.min_logstd_final` over `actor.min_logstd_steps` env steps, then
        stays (DrQ-v2's std schedule): wide noise while the data has little reward, then the actor's
        own std, down to the lower floor, as it learns. Without `min_logstd_final` the floor is fixed.

        With `imagine_horizon_from` the actor's rollout is `horizon` steps until that many env steps,
        `imagine_horizon` from then on: the long rollout carries the reward to the actor while the
        critic has no values yet, the short one stops the model error it compounds later."""
        start, final, steps = self.floor_schedule
        if final is not None:
            self.actor.min_logstd = start + (float(final) - start) * min(env_steps / steps, 1.0)
        switch, short = self.horizon_switch
        if switch is not None:
            self.imagine_horizon = short if env_steps >= switch else self.horizon

    def set_progress(self, progress: float) -> None:
        """Linear decay from each initial LR to `min_lr` as progress goes 0 → 1."""
        if self.cfg.lr_schedule != "linear":
            return
        p = min(max(progress, 0.0), 1.0)
        for opt, lr0 in ((self.wm_opt, self.cfg.model_lr), (self.actor_opt, self.cfg.actor_lr),
                         (self.critic_opt, self.cfg.critic_lr)):
            for group in opt.param_groups:
                group["lr"] = lr0 + (self.cfg.min_lr - lr0) * p

    def state_dict(self) -> dict:
        return {"world_model": self.wm.state_dict(), "actor": self.actor.state_dict(),
                "critic": self.critic.state_dict(), "wm_opt": self.wm_opt.state_dict(),
                "critic_target": self.critic_target.state_dict() if self.critic_target is not None else None,
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "ret_rms": self.ret_rms.state_dict() if self.ret_rms else None, "wm_nfe": getattr(self.wm, "nfe", 0)}

    def load_state_dict(self, d: dict) -> None:
        self.wm.load_state_dict(d["world_model"])
        self.actor.load_state_dict(d["actor"])
        self.critic.load_state_dict(d["critic"])
        if self.critic_target is not None:  # a checkpoint without one (alpha was 0) starts it at the critic
            self.critic_target.load_state_dict(d.get("critic_target") or d["critic"])
        self.wm_opt.load_state_dict(d["wm_opt"])
        self.actor_opt.load_state_dict(d["actor_opt"])
        self.critic_opt.load_state_dict(d["critic_opt"])
        if self.ret_rms is not None and d["ret_rms"] is not None:
            self.ret_rms.load_state_dict(d["ret_rms"])
        if hasattr(self.wm, "nfe"):
            self.wm.nfe = d.get("wm_nfe", 0)
