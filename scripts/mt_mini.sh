#!/bin/bash
# mt-mini end to end on a CPU: online runs collect the data (random seed steps, then the learning
# policy: TD-MPC2-like random -> learned behaviour) -> export -> pretrain both world models ->
# per-task policies (every task x seed x world model) -> compare over tasks x seeds.
#
#   scripts/mt_mini.sh [OUT_DIR]                 the real budget (hours on 2 cores; see README)
#   TASKS=pendulum-spin,cup-spin SEEDS=0 scripts/mt_mini.sh runs/try
#
# Budgets and extra Hydra overrides per stage (environment variables; defaults = the real budget):
#   TASKS (mt-mini's 6)  SEEDS (0,1,2)  ONLINE_STEPS (50000)  PRETRAIN_ITERATIONS (10000)
#   POLICY_ITERATIONS (2000)  EVAL_EVERY (200)  EVAL_EPISODES (10)  THREADS (1)
#   WANDB (wandb.mode: auto)  COLLECT_ARGS  PRETRAIN_ARGS  POLICY_ARGS  COMPARE_ARGS   (space-separated, last)
#   FLOWPWM (the checkout's .venv/bin/flowpwm, else flowpwm on PATH)
# Each stage's wall time goes to OUT_DIR/stage_times.tsv. A stage that fails stops the script.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-runs/mt-mini-$(date +%Y%m%d-%H%M%S)}
FLOWPWM=${FLOWPWM:-$([[ -x $root/.venv/bin/flowpwm ]] && echo "$root/.venv/bin/flowpwm" || echo flowpwm)}
PY=${PY:-$([[ -x $root/.venv/bin/python ]] && echo "$root/.venv/bin/python" || echo python3)}
TASKS=${TASKS:-$("$PY" -c 'from flowpwm.envs.tasksets import MT_MINI; print(",".join(MT_MINI))')}
SEEDS=${SEEDS:-0,1,2}
THREADS=${THREADS:-1}
read -ra collect_args <<<"${COLLECT_ARGS:-}"
read -ra pretrain_args <<<"${PRETRAIN_ARGS:-}"
read -ra policy_args <<<"${POLICY_ARGS:-}"
read -ra compare_args <<<"${COMPARE_ARGS:-}"
quiet=("wandb.mode=${WANDB:-auto}" monitor.progress=lines)

[[ -e $OUT && -n $(ls -A "$OUT" 2>/dev/null) ]] && { echo "mt_mini: $OUT exists and is not empty: choose a new OUT_DIR" >&2; exit 2; }
mkdir -p "$OUT"
printf 'stage\tseconds\n' >"$OUT/stage_times.tsv"

stage() {  # stage NAME COMMAND...: run it, record its wall time
    local name=$1 start=$SECONDS
    shift
    echo "== mt_mini: $name: $*"
    "$@"
    printf '%s\t%s\n' "$name" $((SECONDS - start)) >>"$OUT/stage_times.tsv"
    echo "== mt_mini: $name done in $((SECONDS - start)) s"
}

stage collect "$FLOWPWM" train -m wm=mlp "env.task=$TASKS" "train.env_steps=${ONLINE_STEPS:-50000}" \
    "train.threads=$THREADS" train.plots=false train.esnr_every=0 "${quiet[@]}" "hydra.sweep.dir=$OUT/collect" \
    "${collect_args[@]}"
stage export "$FLOWPWM" data export "$OUT"/collect/*/ --out "$OUT/data" --task-set mt-mini
stage pretrain "$FLOWPWM" pretrain -m wm=mlp,flow "data.path=$OUT/data" \
    "pretrain.iterations=${PRETRAIN_ITERATIONS:-10000}" "pretrain.threads=$THREADS" "${quiet[@]}" \
    "hydra.sweep.dir=$OUT/pretrain" "${pretrain_args[@]}"
stage policies "$FLOWPWM" train-policy -m wm=mlp,flow "task=$TASKS" "seed=$SEEDS" "pretrained=$OUT/pretrain" \
    "policy.iterations=${POLICY_ITERATIONS:-2000}" "policy.eval_every=${EVAL_EVERY:-200}" \
    "policy.eval_episodes=${EVAL_EPISODES:-10}" "policy.threads=$THREADS" "${quiet[@]}" \
    "hydra.sweep.dir=$OUT/policy" "${policy_args[@]}"
stage compare "$FLOWPWM" compare --by alg.world_model.type "$OUT"/policy/*/ --out "$OUT/compare" "${compare_args[@]}"

echo "== mt_mini: done; report $OUT/compare/report.md; stage wall times:"
column -t "$OUT/stage_times.tsv" 2>/dev/null || cat "$OUT/stage_times.tsv"
