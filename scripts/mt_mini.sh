#!/bin/bash
# mt-mini end to end on a CPU: online runs collect the data (random seed steps, then the learning
# policy: TD-MPC2-like random -> learned behaviour) -> export -> pretrain both world models ->
# per-task policies (every task x seed x world model) -> compare over tasks x seeds.
#
#   scripts/mt_mini.sh [OUT_DIR]                 the real budget (hours on 2 cores; see README)
#   TASKS=pendulum-spin,cup-spin SEEDS=0 scripts/mt_mini.sh runs/try
#
# Budgets and extra Hydra overrides per stage (environment variables; defaults = the real budget):
#   TASKS (mt-mini's 6)  SEEDS (0,1,2)  ONLINE_STEPS (50000)  PRETRAIN_ITERATIONS (40000)
#   POLICY_ITERATIONS (2000)  EVAL_EVERY (200)  EVAL_EPISODES (10)  THREADS (1)
#   JOBS (the number of cores): runs at the same time within a stage (hydra/launcher=local); 1 = one after another
#   WANDB (wandb.mode: auto)  COLLECT_ARGS  PRETRAIN_ARGS  POLICY_ARGS  COMPARE_ARGS   (space-separated, last)
#   FLOWPWM (the checkout's .venv/bin/flowpwm, else flowpwm on PATH)
# Each stage's wall time goes to OUT_DIR/stage_times.tsv (stage, seconds, done | interrupted | failed).
# A stage that fails stops the script. Run it again on the same OUT_DIR to continue: finished stages
# are skipped, the runs of the unfinished one continue from their checkpoints (resume=auto), and
# settings that differ from the ones OUT_DIR was started with are refused.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-runs/mt-mini-$(date +%Y%m%d-%H%M%S)}
FLOWPWM=${FLOWPWM:-$([[ -x $root/.venv/bin/flowpwm ]] && echo "$root/.venv/bin/flowpwm" || echo flowpwm)}
PY=${PY:-$([[ -x $root/.venv/bin/python ]] && echo "$root/.venv/bin/python" || echo python3)}
TASKS=${TASKS:-$("$PY" -c 'from flowpwm.envs.tasksets import MT_MINI; print(",".join(MT_MINI))')}
SEEDS=${SEEDS:-0,1,2}
ONLINE_STEPS=${ONLINE_STEPS:-50000}
# 40000: ~6.7k updates' worth per task (the online runs' world models had 12k); after 10000 the frozen
# model's policies swung between good and bad (cartpole-swingup: 155..705), after 20000 they rose
# steadily (docs/results.md, "Multi-task offline").
PRETRAIN_ITERATIONS=${PRETRAIN_ITERATIONS:-40000}
POLICY_ITERATIONS=${POLICY_ITERATIONS:-2000}
EVAL_EVERY=${EVAL_EVERY:-200}
EVAL_EPISODES=${EVAL_EPISODES:-10}
THREADS=${THREADS:-1}
JOBS=${JOBS:-$(nproc)}  # not a setting of the result: a continued OUT_DIR may use another
read -ra collect_args <<<"${COLLECT_ARGS:-}"
read -ra pretrain_args <<<"${PRETRAIN_ARGS:-}"
read -ra policy_args <<<"${POLICY_ARGS:-}"
read -ra compare_args <<<"${COMPARE_ARGS:-}"
quiet=("wandb.mode=${WANDB:-auto}" monitor.progress=lines)
launcher=()
if ((JOBS > 1)); then launcher=(hydra/launcher=local); export FLOWPWM_JOBS=$JOBS; fi

# What the result depends on: a continued OUT_DIR must be run with the same.
settings=$(for v in TASKS SEEDS ONLINE_STEPS PRETRAIN_ITERATIONS POLICY_ITERATIONS EVAL_EVERY EVAL_EPISODES \
                    COLLECT_ARGS PRETRAIN_ARGS POLICY_ARGS COMPARE_ARGS; do printf '%s=%s\n' "$v" "${!v:-}"; done)
times=$OUT/stage_times.tsv
if [[ -e $OUT && -n $(ls -A "$OUT" 2>/dev/null) ]]; then
    [[ -f $OUT/settings.txt && -f $times ]] ||
        { echo "mt_mini: $OUT exists and is not an mt_mini output directory: choose a new OUT_DIR" >&2; exit 2; }
    differ=$(diff "$OUT/settings.txt" <(echo "$settings") | sed -n 's/^> //p' | paste -sd ' ' -) || true
    [[ -z $differ ]] || { echo "mt_mini: $OUT was started with other settings ($differ differ from" \
        "$OUT/settings.txt): continue it with those, or choose a new OUT_DIR" >&2; exit 2; }
    export FLOWPWM_RESUME=auto  # every run of an unfinished stage continues from its checkpoint
    echo "== mt_mini: continuing $OUT; done: $(awk -F'\t' '$3 == "done" {print $1}' "$times" | paste -sd ' ' -)"
else
    mkdir -p "$OUT"
    echo "$settings" >"$OUT/settings.txt"
    printf 'stage\tseconds\tstatus\n' >"$times"
fi

finished() { awk -F'\t' -v n="$1" '$1 == n && $3 == "done" {f = 1} END {exit !f}' "$times"; }

interrupted() {  # interrupted NAME START EXIT_CODE
    printf '%s\t%s\tinterrupted\n' "$1" $((SECONDS - $2)) >>"$times"
    echo "== mt_mini: $1 interrupted; run the same command again to continue" >&2
    exit "$3"
}

stage() {  # stage NAME COMMAND...: run it (unless done before), record its wall time and how it ended
    local name=$1 start=$SECONDS
    shift
    if finished "$name"; then
        echo "== mt_mini: $name: done before, skipped"
        return
    fi
    echo "== mt_mini: $name: $*"
    # A scheduler's SIGTERM (or ^C) reaches the stage's runs too: they checkpoint, then this records it.
    trap 'interrupted "$name" $start 143' TERM
    trap 'interrupted "$name" $start 130' INT
    local rc=0
    "$@" || rc=$?
    trap - TERM INT
    if ((rc != 0)); then
        printf '%s\t%s\tfailed\n' "$name" $((SECONDS - start)) >>"$times"
        echo "== mt_mini: $name failed (exit $rc); run the same command again to continue" >&2
        exit "$rc"
    fi
    printf '%s\t%s\tdone\n' "$name" $((SECONDS - start)) >>"$times"
    echo "== mt_mini: $name done in $((SECONDS - start)) s"
}

stage collect "$FLOWPWM" train -m "${launcher[@]}" wm=mlp "env.task=$TASKS" "train.env_steps=$ONLINE_STEPS" \
    "train.threads=$THREADS" train.plots=false train.esnr_every=0 "${quiet[@]}" "hydra.sweep.dir=$OUT/collect" \
    "${collect_args[@]}"
finished export || rm -rf "$OUT/data"  # what an export cut short left of a dataset
stage export "$FLOWPWM" data export "$OUT"/collect/*/ --out "$OUT/data" --task-set mt-mini
stage pretrain "$FLOWPWM" pretrain -m "${launcher[@]}" wm=mlp,flow "data.path=$OUT/data" \
    "pretrain.iterations=$PRETRAIN_ITERATIONS" "pretrain.threads=$THREADS" "${quiet[@]}" \
    "hydra.sweep.dir=$OUT/pretrain" "${pretrain_args[@]}"
stage policies "$FLOWPWM" train-policy -m "${launcher[@]}" wm=mlp,flow "task=$TASKS" "seed=$SEEDS" "pretrained=$OUT/pretrain" \
    "policy.iterations=$POLICY_ITERATIONS" "policy.eval_every=$EVAL_EVERY" \
    "policy.eval_episodes=$EVAL_EPISODES" "policy.threads=$THREADS" "${quiet[@]}" \
    "hydra.sweep.dir=$OUT/policy" "${policy_args[@]}"
stage compare "$FLOWPWM" compare --by alg.world_model.type "$OUT"/policy/*/ --out "$OUT/compare" "${compare_args[@]}"

# A stage continued after an interruption has one line per segment: its wall time is their sum.
echo "== mt_mini: done; report $OUT/compare/report.md; wall time per stage (s, segments):"
awk -F'\t' 'NR > 1 {if (!($1 in s)) order[n++] = $1; s[$1] += $2; k[$1]++}
             END {for (i = 0; i < n; i++) printf "%-9s %7d  %d\n", order[i], s[order[i]], k[order[i]]}' "$times"
