#!/bin/bash
# flowpwm on Slurm: one training run on one GPU, then its plots.
#
#   sbatch [sbatch options] cluster/slurm_single_gpu.sh [options] [hydra overrides ...]
#
#   sbatch --account=ACCOUNT --partition=PARTITION cluster/slurm_single_gpu.sh alg=pwm_48M_flow seed=1
#   RUN_NAME=flow48m_s1 sbatch --time=48:00:00 cluster/slurm_single_gpu.sh alg=pwm_48M_flow seed=1
#   cluster/submit_job.sh single --alg pwm_5M --seed 0      (checks everything, then calls sbatch)
#
# Resources: the #SBATCH lines below are defaults. sbatch's command-line options override them,
# and so do sbatch's own environment variables (SBATCH_ACCOUNT, SBATCH_PARTITION, SBATCH_QOS,
# SBATCH_TIMELIMIT, SBATCH_GRES, SBATCH_MEM_PER_NODE, ...). No account, partition or QoS is set
# here: without one, the cluster's defaults apply.
#
# Options (before the overrides; each has an environment variable, see cluster/common.sh):
#   --modules "M1 M2"   modules to load                      FLOWPWM_MODULES   (none)
#   --activate ENV      virtualenv dir, script or conda env  FLOWPWM_ACTIVATE  (<checkout>/.venv if any)
#   --name NAME         run directory name                   RUN_NAME          (slurm-<job id>)
#   --runs DIR          parent of the run directories        FLOWPWM_RUNS      (<checkout>/runs)
#   --device DEV        training device                      FLOWPWM_DEVICE    (cuda)
#
# Training: `flowpwm train hydra.run.dir=RUNS/NAME resume=auto device=DEV [overrides]` with the
# output in the job's log; then `flowpwm plot RUNS/NAME` (unless training already made its plots,
# train.plots=true). The job's exit status is training's; a failed plot is only a warning.
#
# Preemption and time limits: Slurm sends SIGUSR1 to this shell 300 s before the time limit
# (--signal=B:USR1@300; `scancel --batch --signal=USR1 JOBID` does the same by hand). The script
# passes it to training, which finishes its epoch, writes its checkpoint and exits 75; the script
# then runs `scontrol requeue $SLURM_JOB_ID`. The requeued job keeps its id, hence its run
# directory, and continues from the checkpoint (resume=auto). SIGTERM (scancel, preemption) also
# makes training checkpoint and stop, but is not followed by a requeue: a cancelled job stays
# cancelled, and Slurm requeues preempted jobs itself (PreemptMode=REQUEUE).
#
#SBATCH --job-name=flowpwm
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
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
        --modules) need_value "$@"; FLOWPWM_MODULES=$2; shift 2 ;;
        --activate) need_value "$@"; FLOWPWM_ACTIVATE=$2; shift 2 ;;
        --name) need_value "$@"; RUN_NAME=$2; shift 2 ;;
        --runs) need_value "$@"; FLOWPWM_RUNS=$2; shift 2 ;;
        --device) need_value "$@"; FLOWPWM_DEVICE=$2; shift 2 ;;
        --) shift; break ;;
        -*) die "unknown option $1 (options: --modules --activate --name --runs --device; then hydra overrides)" ;;
        *) break ;;
    esac
done

RUN_NAME=${RUN_NAME:-$(default_run_name)}
FLOWPWM_RUNS=${FLOWPWM_RUNS:-$FLOWPWM_ROOT/runs}
RUN_DIR=$FLOWPWM_RUNS/$RUN_NAME
mkdir -p "$FLOWPWM_RUNS" || die "cannot create $FLOWPWM_RUNS"

log "job ${SLURM_JOB_ID:-(not under Slurm)} on $(hostname), restart ${SLURM_RESTART_COUNT:-0}, GPU ${CUDA_VISIBLE_DEVICES:-none}"
log "run dir $RUN_DIR"
setup_env

args=("hydra.run.dir=$RUN_DIR" "resume=auto" "device=${FLOWPWM_DEVICE:-cuda}" "monitor.progress=lines" "$@")
log "flowpwm train ${args[*]}"
[[ -n $FLOWPWM_SIGNAL ]] && requeue_and_exit  # stopped before training started
flowpwm train "${args[@]}" &
FLOWPWM_PIDS=($!)
wait_pid "${FLOWPWM_PIDS[0]}"
rc=$?
FLOWPWM_PIDS=()

if stopped_by_signal "$rc"; then
    log "training stopped (exit status $rc; signal to this job: ${FLOWPWM_SIGNAL:-none})"
    requeue_and_exit
elif ((rc != 0)); then
    log "training failed with exit status $rc"
    exit "$rc"
fi

if [[ -d $RUN_DIR/plots && -n $(find "$RUN_DIR/plots" -type f -newer "$RUN_DIR/metrics.jsonl" 2>/dev/null | head -n 1) ]]; then
    log "training finished and made its plots: $RUN_DIR/plots"
else
    log "training finished; flowpwm plot $RUN_DIR"
    flowpwm plot "$RUN_DIR" || warn "flowpwm plot $RUN_DIR failed (exit status $?); training itself succeeded"
fi
log "done: $RUN_DIR"
exit 0
