#!/bin/bash
# flowpwm on Slurm: four training runs in parallel on the four GPUs of one node, then a comparison.
#
#   sbatch [sbatch options] cluster/slurm_multi_gpu.sh [options] [hydra overrides ...]
#
#   sbatch cluster/slurm_multi_gpu.sh --strategy multi_seed alg=pwm_5M_flow
#   STRATEGY=baseline_vs_flow SEEDS="0 1" sbatch cluster/slurm_multi_gpu.sh alg=pwm_48M
#   sbatch cluster/slurm_multi_gpu.sh --strategy multi_task --tasks "walker-walk cheetah-run cup-catch finger-spin"
#   sbatch cluster/slurm_multi_gpu.sh --strategy multi_task --pretrained runs/pretrain/mt30_flow \
#       --tasks "walker-walk cheetah-run cup-catch finger-spin" wm=flow alg=pwm_48M
#   cluster/submit_job.sh multi --strategy baseline_vs_flow --alg pwm_5M   (checks, then calls sbatch)
#
# Strategies (STRATEGY or --strategy; the overrides apply to every run, the strategy's own last):
#   multi_seed        4 seeds (SEEDS, default "0 1 2 3"): runs s0 s1 s2 s3
#   multi_task        4 tasks (TASKS, default "cartpole-swingup walker-walk cheetah-run finger-spin");
#                     with --pretrained DIR [PRETRAINED]: PWM's offline per-task policies instead,
#                     `flowpwm train-policy task=T pretrained=DIR` for each task (TASKS required; DIR is a
#                     pretraining run, or a directory of them: the one of this job's alg is used), then
#                     the comparison aggregates their normalised scores over the 4 tasks
#   baseline_vs_flow  2 seeds (SEEDS, default "0 1") x {wm=mlp, wm=flow}: runs mlp_s0 flow_s0 mlp_s1 flow_s1
#                     (the size comes from alg=: alg=pwm_48M gives pwm_48M vs pwm_48M_flow)
#
# Each run sees only its own GPU (CUDA_VISIBLE_DEVICES=<one of the job's GPUs>) and a quarter of
# the job's CPUs (train.threads, OMP_NUM_THREADS); its output goes to RUNS/NAME/logs/<run>.log and
# its run directory is RUNS/NAME/<run>. The script waits for all four; if any failed it names them,
# shows the end of their logs and exits 1. Otherwise it runs
# `flowpwm compare --group ... [$FLOWPWM_COMPARE_ARGS] --out RUNS/NAME/compare` over the four runs
# (a failed comparison makes the job fail, after the runs are safely done).
#
# Resources: the #SBATCH lines below are defaults; sbatch's command-line options and its
# environment variables (SBATCH_ACCOUNT, SBATCH_PARTITION, SBATCH_QOS, SBATCH_TIMELIMIT, ...)
# override them. No account, partition or QoS is set here.
#
# Options (before the overrides; environment variables in brackets, see also cluster/common.sh):
#   --strategy S [STRATEGY]  --seeds "..." [SEEDS]  --tasks "..." [TASKS]
#   --modules "M1 M2" [FLOWPWM_MODULES]  --activate ENV [FLOWPWM_ACTIVATE]  --name NAME [RUN_NAME]
#   --runs DIR [FLOWPWM_RUNS]  --device DEV [FLOWPWM_DEVICE]  --pretrained DIR [PRETRAINED]
#
# Preemption and time limits: as in slurm_single_gpu.sh. SIGUSR1 (300 s before the time limit)
# or SIGTERM goes to all four runs; each writes its checkpoint and exits 75 (or has already
# finished). After SIGUSR1 the script requeues the job, and on the next start every run continues
# its own run directory (resume=auto; a finished run just reports its result again).
#
#SBATCH --job-name=flowpwm-multi
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=32
#SBATCH --mem=128G
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

flowpwm_root() {  # the checkout: sbatch runs a copy of this script, so ask Slurm where it was
    local d
    if [[ -n ${FLOWPWM_ROOT:-} ]]; then
        printf '%s\n' "$FLOWPWM_ROOT"
        return
    fi
    if [[ -n ${SLURM_JOB_ID:-} ]]; then
        d=$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *Command=\([^ ]*\).*/\1/p' | head -n 1)
        [[ -n $d ]] && d=$(dirname "$d")/..
        [[ -n $d && -f $d/cluster/common.sh ]] && (cd "$d" && pwd) && return
    fi
    for d in "${SLURM_SUBMIT_DIR:-}" "$(dirname "$0")/.."; do
        [[ -n $d && -f $d/cluster/common.sh ]] && (cd "$d" && pwd) && return
    done
    return 1
}
FLOWPWM_ROOT=$(flowpwm_root) || {
    echo "flowpwm job: error: cannot find the flowpwm checkout; set FLOWPWM_ROOT" >&2
    exit 2
}
export FLOWPWM_ROOT
# shellcheck source=cluster/common.sh
source "$FLOWPWM_ROOT/cluster/common.sh"

while (($#)); do
    case $1 in
        --strategy) need_value "$@"; STRATEGY=$2; shift 2 ;;
        --seeds) need_value "$@"; SEEDS=$2; shift 2 ;;
        --tasks) need_value "$@"; TASKS=$2; shift 2 ;;
        --modules) need_value "$@"; FLOWPWM_MODULES=$2; shift 2 ;;
        --activate) need_value "$@"; FLOWPWM_ACTIVATE=$2; shift 2 ;;
        --name) need_value "$@"; RUN_NAME=$2; shift 2 ;;
        --runs) need_value "$@"; FLOWPWM_RUNS=$2; shift 2 ;;
        --device) need_value "$@"; FLOWPWM_DEVICE=$2; shift 2 ;;
        --pretrained) need_value "$@"; PRETRAINED=$2; shift 2 ;;
        --) shift; break ;;
        -*) die "unknown option $1 (options: --strategy --seeds --tasks --modules --activate --name --runs --device --pretrained; then hydra overrides)" ;;
        *) break ;;
    esac
done

# The four runs: a label (its directory name) and the overrides that make it differ; online
# training, or (multi_task with a pretrained world model) offline per-task policies.
STRATEGY=${STRATEGY:-multi_seed}
PRETRAINED=${PRETRAINED:-}
command=train
threads_key=train.threads
if [[ -n $PRETRAINED ]]; then
    [[ $STRATEGY == multi_task ]] || die "--pretrained is for --strategy multi_task (per-task policies through a pretrained world model)"
    [[ -n ${TASKS:-} ]] || die "--pretrained needs --tasks: 4 tasks of the pretrained world model's task set"
    command=train-policy
    threads_key=policy.threads
fi
labels=()
extra=()
case $STRATEGY in
    multi_seed)
        read -ra seeds <<<"${SEEDS:-0 1 2 3}"
        ((${#seeds[@]} == 4)) || die "multi_seed needs 4 seeds, SEEDS='${SEEDS:-}' has ${#seeds[@]}"
        for s in "${seeds[@]}"; do
            labels+=("s$s")
            extra+=("seed=$s")
        done
        ;;
    multi_task)
        read -ra tasks <<<"${TASKS:-cartpole-swingup walker-walk cheetah-run finger-spin}"
        ((${#tasks[@]} == 4)) || die "multi_task needs 4 tasks, TASKS='${TASKS:-}' has ${#tasks[@]}"
        for t in "${tasks[@]}"; do
            labels+=("$t")
            if [[ -n $PRETRAINED ]]; then
                extra+=("task=$t pretrained=$PRETRAINED")
            else
                extra+=("env.task=$t")
            fi
        done
        ;;
    baseline_vs_flow)
        read -ra seeds <<<"${SEEDS:-0 1}"
        ((${#seeds[@]} == 2)) || die "baseline_vs_flow needs 2 seeds, SEEDS='${SEEDS:-}' has ${#seeds[@]}"
        for s in "${seeds[@]}"; do
            for wm in mlp flow; do
                labels+=("${wm}_s$s")
                extra+=("wm=$wm seed=$s")
            done
        done
        ;;
    *) die "unknown strategy '$STRATEGY': choose multi_seed, multi_task or baseline_vs_flow" ;;
esac

RUN_NAME=${RUN_NAME:-$(default_run_name)}
FLOWPWM_RUNS=${FLOWPWM_RUNS:-$FLOWPWM_ROOT/runs}
GROUP_DIR=$FLOWPWM_RUNS/$RUN_NAME
mkdir -p "$GROUP_DIR/logs" || die "cannot create $GROUP_DIR/logs"

# One GPU per run, from the GPUs Slurm gave the job.
IFS=, read -ra gpus <<<"${CUDA_VISIBLE_DEVICES:-}"
if ((${#gpus[@]} < 4)); then
    if [[ -z ${SLURM_JOB_ID:-} && -z ${CUDA_VISIBLE_DEVICES:-} ]]; then
        gpus=(0 1 2 3)
        warn "not under Slurm and CUDA_VISIBLE_DEVICES is unset: using GPUs 0 1 2 3"
    else
        die "4 GPUs needed (one per run), this job has ${#gpus[@]} (CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES:-}'): submit with --gres=gpu:4"
    fi
fi
cpus=${SLURM_CPUS_PER_TASK:-$(nproc)}
threads=$((cpus / 4))
((threads >= 1)) || threads=1

log "job ${SLURM_JOB_ID:-(not under Slurm)} on $(hostname), restart ${SLURM_RESTART_COUNT:-0}, strategy $STRATEGY${PRETRAINED:+ (per-task policies, pretrained $PRETRAINED)}, GPUs ${gpus[*]:0:4}, $threads threads per run"
log "runs in $GROUP_DIR"
setup_env
[[ -n $FLOWPWM_SIGNAL ]] && requeue_and_exit  # stopped before training started

dirs=()
for i in 0 1 2 3; do
    dirs+=("$GROUP_DIR/${labels[i]}")
    read -ra run_extra <<<"${extra[i]}"
    logfile=$GROUP_DIR/logs/${labels[i]}.log
    (
        export CUDA_VISIBLE_DEVICES=${gpus[i]}
        export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}
        echo "$(date '+%F %T') flowpwm job: run ${labels[i]} of job ${SLURM_JOB_ID:-local} (restart ${SLURM_RESTART_COUNT:-0}): CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"
        exec flowpwm "$command" "hydra.run.dir=${dirs[i]}" resume=auto "device=${FLOWPWM_DEVICE:-cuda}" monitor.progress=lines \
            "$threads_key=$threads" "wandb.group=$RUN_NAME" "$@" "${run_extra[@]}"
    ) >>"$logfile" 2>&1 &
    FLOWPWM_PIDS+=($!)
    log "run ${labels[i]} (pid $!): GPU ${gpus[i]}, ${extra[i]}, log $logfile"
done

rcs=()
for i in 0 1 2 3; do
    wait_pid "${FLOWPWM_PIDS[i]}"
    rcs[i]=$?
    log "run ${labels[i]} ended with exit status ${rcs[i]}"
done
FLOWPWM_PIDS=()

failed=()
stopped=0
for i in 0 1 2 3; do
    if ((rcs[i] == 0)); then
        continue
    elif stopped_by_signal "${rcs[i]}"; then
        stopped=1
    else
        failed+=("${labels[i]}")
        log "run ${labels[i]} FAILED (exit status ${rcs[i]}); the end of $GROUP_DIR/logs/${labels[i]}.log:"
        tail -n 20 "$GROUP_DIR/logs/${labels[i]}.log" | sed 's/^/    /'
    fi
done
if ((${#failed[@]})); then
    log "failed: ${failed[*]} (of ${labels[*]}); no comparison"
    exit 1
fi
((stopped)) && requeue_and_exit

log "all 4 runs finished; comparison"
cmp=()
case $STRATEGY in
    multi_seed)
        name=$(override_value alg "$@")
        [[ -n $name ]] || name=$(override_value wm "$@")
        cmp=(--group "${name:-runs}" "${dirs[@]}")
        ;;
    multi_task)
        if [[ -n $PRETRAINED ]]; then  # one group: the normalised score over the 4 tasks
            name=$(override_value alg "$@")
            [[ -n $name ]] || name=$(override_value wm "$@")
            cmp=(--group "${name:-policies}" "${dirs[@]}")
        else
            for i in 0 1 2 3; do cmp+=(--group "${labels[i]}" "${dirs[i]}"); done
        fi
        ;;
    baseline_vs_flow)
        cmp=(--group mlp "${dirs[0]}" "${dirs[2]}" --group flow "${dirs[1]}" "${dirs[3]}")
        ;;
esac
read -ra cmp_args <<<"${FLOWPWM_COMPARE_ARGS:-}"
cmp+=("${cmp_args[@]}" --out "$GROUP_DIR/compare")
log "flowpwm compare ${cmp[*]}"
if ! flowpwm compare "${cmp[@]}"; then
    log "the 4 runs finished, but the comparison failed; rerun it with: flowpwm compare ${cmp[*]}"
    exit 1
fi
log "done: $GROUP_DIR"
exit 0
