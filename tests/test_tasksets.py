"""Task sets (MT30, MT80, mt-mini) and the multi-task env: TD-MPC2's order, dims, padding, masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowpwm.config import UserError
from flowpwm.envs import MT30, MT80, MT_MINI, MultiTaskEnv, get_task_set, make_env, make_multitask_env
from flowpwm.envs.tasksets import CUSTOM_TASKS, METAWORLD_TASKS, task_dims

# MT30 as the issue (and TD-MPC2's common/__init__.py TASK_SET) lists it; the task id is the index.
ISSUE_MT30 = """walker-stand, walker-walk, walker-run, cheetah-run, reacher-easy, reacher-hard, acrobot-swingup,
pendulum-swingup, cartpole-balance, cartpole-balance-sparse, cartpole-swingup, cartpole-swingup-sparse, cup-catch,
finger-spin, finger-turn-easy, finger-turn-hard, fish-swim, hopper-stand, hopper-hop, walker-walk-backwards,
walker-run-backwards, cheetah-run-backwards, cheetah-run-front, cheetah-run-back, cheetah-jump, hopper-hop-backwards,
reacher-three-easy, reacher-three-hard, cup-spin, pendulum-spin"""

ISSUE_DIMS = {"walker": (24, 6), "cheetah": (17, 6), "reacher": (6, 2), "reacher-three": (8, 3), "acrobot": (6, 1),
              "pendulum": (3, 1), "cartpole": (5, 1), "cup": (8, 2), "finger-spin": (9, 2), "finger-turn": (12, 2),
              "fish": (24, 5), "hopper": (15, 4), "mw": (39, 4)}


def _issue_dims(task: str) -> tuple[int, int]:
    key = max((k for k in ISSUE_DIMS if task.startswith(k + "-") or task == k), key=len)
    return ISSUE_DIMS[key]


def test_task_ids_follow_tdmpc2_order():
    assert MT30 == tuple(t.strip() for t in ISSUE_MT30.split(","))
    mt30 = get_task_set("mt30")
    assert [mt30.task_id(t) for t in ("walker-stand", "hopper-hop", "walker-walk-backwards", "pendulum-spin")] == [
        0, 18, 19, 29]
    assert MT30[19:] == CUSTOM_TASKS and len(CUSTOM_TASKS) == 11
    assert len(MT80) == 80 and len(set(MT80)) == 80 and MT80[:30] == MT30 and MT80[30:] == METAWORLD_TASKS
    assert (MT80[30], MT80[31], MT80[44], MT80[75], MT80[79]) == (
        "mw-assembly", "mw-basketball", "mw-drawer-open", "mw-bin-picking", "mw-hand-insert")
    assert all(t.startswith("mw-") for t in METAWORLD_TASKS)


def test_task_set_dims_and_masks():
    for task in MT80:
        assert task_dims(task) == _issue_dims(task), task
    mt30, mt80 = get_task_set("mt30"), get_task_set("mt80")
    assert (mt30.obs_dim, mt30.action_dim, mt80.obs_dim, mt80.action_dim) == (24, 6, 39, 6)
    masks = torch.tensor(mt30.action_masks())
    assert masks.shape == (30, 6)
    assert masks.sum(1).tolist() == [float(a) for a in mt30.action_dims]
    assert masks[mt30.task_id("pendulum-spin")].tolist() == [1, 0, 0, 0, 0, 0]
    assert masks[mt30.task_id("reacher-three-easy")].tolist() == [1, 1, 1, 0, 0, 0]
    assert set(mt80.episode_lengths[30:]) == {100} and set(mt80.episode_lengths[:30]) == {500}


def test_mt_mini_is_a_cheap_mt30_subset_with_its_own_ids():
    mini = get_task_set("mt-mini")
    assert mini.tasks == MT_MINI and 5 <= len(mini) <= 7
    assert sum(t in CUSTOM_TASKS for t in mini.tasks) >= 2
    assert [mini.task_id(t) for t in mini.tasks] == list(range(len(mini)))
    assert mini.mt30_ids == tuple(MT30.index(t) for t in mini.tasks)
    assert (mini.obs_dim, mini.action_dim) == (24, 6)  # MT30's layout
    assert mini.to_dict()["tasks"] == list(mini.tasks)


@pytest.mark.parametrize("task", MT30)
def test_every_mt30_task_builds_with_the_listed_dims(task: str):
    env = make_env(task, num_envs=1, seed=0)
    assert (env.obs_dim, env.action_dim, env.max_episode_steps) == (*_issue_dims(task), 500)
    obs = env.reset()
    assert obs.shape == (1, env.obs_dim)
    env.close()


def test_tdmpc2_spellings_are_the_same_suite_tasks():
    for tdmpc2, ours in [("cartpole-balance-sparse", "cartpole-balance_sparse"), ("finger-turn-easy", "finger-turn_easy")]:
        a, b = make_env(tdmpc2, num_envs=1, seed=3), make_env(ours, num_envs=1, seed=3)
        assert a.task == tdmpc2
        assert torch.equal(a.reset(), b.reset())
        act = torch.full((1, a.action_dim), 0.3)
        assert all(torch.equal(x, y) for x, y in zip(a.step(act), b.step(act)))


def test_multitask_env_pads_obs_masks_actions_and_exposes_the_task_id():
    env = make_multitask_env("mt30", "cup-spin", num_envs=2, seed=4)
    raw = make_env("cup-spin", num_envs=2, seed=4)
    assert isinstance(env, MultiTaskEnv)
    assert (env.obs_dim, env.action_dim, env.task_obs_dim, env.task_action_dim) == (24, 6, 8, 2)
    assert env.task_id == 28 and env.task_ids().tolist() == [28, 28]
    assert env.action_mask.tolist() == [1, 1, 0, 0, 0, 0]
    obs, raw_obs = env.reset(), raw.reset()
    assert obs.shape == (2, 24) and torch.equal(obs[:, :8], raw_obs) and not obs[:, 8:].any()
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        a = 2 * torch.rand(2, 6, generator=g) - 1
        junk = a.clone()
        junk[:, 2:] = 100.0  # padded action dims never reach the simulator
        out, raw_out = env.step(junk), raw.step(a[:, :2])
        assert torch.equal(out[0][:, :8], raw_out[0]) and not out[0][:, 8:].any()
        assert all(torch.equal(x, y) for x, y in zip(out[1:4], raw_out[1:4]))
    # mt-mini ids are its own order; MT80 pads to 39.
    assert make_multitask_env("mt-mini", "cup-spin").task_id == MT_MINI.index("cup-spin")
    mt80 = make_multitask_env("mt80", "pendulum-spin", num_envs=1)
    assert mt80.obs_dim == 39 and mt80.reset().shape == (1, 39)
    with pytest.raises(ValueError, match="shape"):
        env.step(torch.zeros(2, 2))  # the agent acts in the set's 6-dim space


def test_bad_names_are_one_line_user_errors():
    cases = [(lambda: get_task_set("mt31"), "mt-mini"),
             (lambda: make_multitask_env("mt-mini", "walker-run"), "cartpole-balance"),
             (lambda: make_env("mw-assembly"), "metaworld"),
             (lambda: make_env("cheetah-run-sideways"), "cheetah-run-backwards")]
    for fn, hint in cases:
        with pytest.raises(UserError) as info:
            fn()
        assert "\n" not in str(info.value) and hint in str(info.value)
    assert "mujoco==3.17.0" in _message(lambda: make_env("mw-hand-insert"))


def _message(fn) -> str:
    try:
        fn()
    except UserError as e:
        return str(e)
    raise AssertionError("no UserError")


def test_dims_table_rejects_tasks_outside_the_sets():
    with pytest.raises(UserError):
        task_dims("Hopper-v5")
    np.testing.assert_equal(task_dims("reacher-three-hard"), (8, 3))
