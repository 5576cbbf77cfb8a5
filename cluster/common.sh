# shellcheck shell=bash
# Shared by slurm_single_gpu.sh and slurm_multi_gpu.sh (sourced, not run).
#
# Environment variables (all optional; the job scripts' flags set the same things):
#   FLOWPWM_MODULES   modules to `module load` first, space-separated, e.g. "cuda/12.4"   (none)
#   FLOWPWM_ACTIVATE  the Python environment to activate: a virtualenv directory, a script to
#                     source, or a conda env name      (the checkout's .venv if it has one, else
#                                                       whatever `flowpwm` is on PATH)
#   FLOWPWM_RUNS      where run directories go                              ($FLOWPWM_ROOT/runs)
#   RUN_NAME          the job's run directory name: fixed across requeues   (slurm-<job id>)
#   FLOWPWM_DEVICE    device= passed to training (an override on the command line wins)  (cuda)

EXIT_REQUEUE=75           # training stopped on a signal after writing its checkpoint
FLOWPWM_PIDS=()           # training processes that get the signals the batch shell receives
FLOWPWM_SIGNAL=""         # the last signal received ("" = none)
FLOWPWM_INTERRUPTED=0

log() { printf '%s flowpwm job: %s\n' "$(date '+%F %T')" "$*"; }
warn() { printf '%s flowpwm job: warning: %s\n' "$(date '+%F %T')" "$*" >&2; }
die() {
    printf '%s flowpwm job: error: %s\n' "$(date '+%F %T')" "$*" >&2
    exit 2
}

# `module load` each of FLOWPWM_MODULES, then activate FLOWPWM_ACTIVATE; `flowpwm` must then run.
setup_env() {
    local m env=${FLOWPWM_ACTIVATE:-}
    if [[ -n ${FLOWPWM_MODULES:-} ]]; then
        if ! type module >/dev/null 2>&1; then
            for init in /etc/profile.d/lmod.sh /etc/profile.d/modules.sh /usr/share/lmod/lmod/init/bash; do
                # shellcheck disable=SC1090
                [[ -f $init ]] && source "$init" && break
            done
        fi
        type module >/dev/null 2>&1 || die "FLOWPWM_MODULES='$FLOWPWM_MODULES' but this node has no 'module' command"
        for m in $FLOWPWM_MODULES; do
            module load "$m" || die "module load $m failed (FLOWPWM_MODULES='$FLOWPWM_MODULES')"
        done
    fi
    if [[ -z $env && -f $FLOWPWM_ROOT/.venv/bin/activate ]]; then
        env=$FLOWPWM_ROOT/.venv
    fi
    if [[ -n $env ]]; then
        if [[ -f $env/bin/activate ]]; then
            # shellcheck disable=SC1091
            source "$env/bin/activate" || die "could not activate the virtualenv $env"
        elif [[ -f $env ]]; then
            # shellcheck disable=SC1090
            source "$env" || die "sourcing $env failed"
        elif [[ $env != */* ]] && command -v conda >/dev/null 2>&1; then
            { eval "$(conda shell.bash hook)" && conda activate "$env"; } || die "conda activate $env failed"
        else
            die "FLOWPWM_ACTIVATE=$env is not a virtualenv directory, a script or a conda env name"
        fi
    fi
    command -v flowpwm >/dev/null 2>&1 ||
        die "no 'flowpwm' command after loading the environment: set FLOWPWM_ACTIVATE (or --activate) to the env where flowpwm is installed"
    log "python $(command -v python 2>/dev/null || echo '?'), flowpwm $(command -v flowpwm)"
}

# The run directory name: fixed for the life of the job, requeues included.
default_run_name() {
    if [[ -n ${SLURM_ARRAY_JOB_ID:-} ]]; then
        printf 'slurm-%s_%s\n' "$SLURM_ARRAY_JOB_ID" "$SLURM_ARRAY_TASK_ID"
    elif [[ -n ${SLURM_JOB_ID:-} ]]; then
        printf 'slurm-%s\n' "$SLURM_JOB_ID"
    else
        printf 'local-%s-%s\n' "$(date +%Y%m%d-%H%M%S)" "$$"  # the PID: two started in one second differ
    fi
}

# Slurm sends USR1 to this shell before the time limit (--signal=B:USR1@secs) and TERM on
# preemption or scancel. Either is passed on to every training process, which finishes its
# epoch, writes its checkpoint and exits 75.
on_signal() {
    FLOWPWM_SIGNAL=$1
    FLOWPWM_INTERRUPTED=1
    log "got SIG$1: passing it to training (pid ${FLOWPWM_PIDS[*]:-none}) to checkpoint and stop"
    ((${#FLOWPWM_PIDS[@]})) && kill -s "$1" "${FLOWPWM_PIDS[@]}" 2>/dev/null
    return 0
}
trap 'on_signal USR1' USR1
trap 'on_signal TERM' TERM

# A training exit status that means "stopped by the signal, continue later": 75 (checkpoint
# written), or killed by USR1/TERM before its handlers were in place (it continues from its
# last checkpoint).
stopped_by_signal() {
    (($1 == EXIT_REQUEUE)) || { [[ -n $FLOWPWM_SIGNAL ]] && (($1 == 128 + 10 || $1 == 128 + 15)); }
}

# Exit status of background process $1. A trapped signal interrupts `wait`; wait again.
wait_pid() {
    local rc
    while :; do
        FLOWPWM_INTERRUPTED=0
        wait "$1"
        rc=$?
        ((FLOWPWM_INTERRUPTED)) || return "$rc"
    done
}

# Training stopped on a signal and saved its checkpoint. After SIGUSR1 (the time-limit warning,
# or `scancel --batch --signal=USR1` by hand) put the job back in the queue: it keeps its job id,
# hence its run dir, and continues from the checkpoint (resume=auto). After SIGTERM do not:
# `scancel` sends it, and a cancelled job must stay cancelled (a requeue would still succeed);
# on preemption Slurm requeues the job itself when the cluster preempts with PreemptMode=REQUEUE.
requeue_and_exit() {
    local sig=${FLOWPWM_SIGNAL:+SIG$FLOWPWM_SIGNAL}
    if [[ $FLOWPWM_SIGNAL != USR1 ]]; then
        log "stopped on ${sig:-a signal sent to training directly}: not requeueing (cancelled or preempted;" \
            "Slurm requeues preempted jobs itself). To continue: submit again with RUN_NAME=$RUN_NAME"
        exit "$EXIT_REQUEUE"
    fi
    if [[ -z ${SLURM_JOB_ID:-} ]]; then
        log "stopped on SIGUSR1 outside Slurm: run the same command with RUN_NAME=$RUN_NAME to continue"
        exit "$EXIT_REQUEUE"
    fi
    log "requeueing job $SLURM_JOB_ID (restart $((${SLURM_RESTART_COUNT:-0} + 1))); it continues from the checkpoint"
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        warn "scontrol requeue $SLURM_JOB_ID failed (not requeueable?): to continue, submit again with RUN_NAME=$RUN_NAME"
    fi
    exit "$EXIT_REQUEUE"
}

# 0 when one of the arguments after the first sets the Hydra key $1 (key=..., +key=, ++key=).
has_override() {
    local key=$1 a
    shift
    for a in "$@"; do
        a=${a#++}
        a=${a#+}
        [[ $a == "$key="* ]] && return 0
    done
    return 1
}

# The value of the last `key=value` among the arguments after the first ("" if none).
override_value() {
    local key=$1 a v=""
    shift
    for a in "$@"; do
        a=${a#++}
        a=${a#+}
        [[ $a == "$key="* ]] && v=${a#"$key="}
    done
    printf '%s\n' "$v"
}

# Option parsing: `need_value "$@"` before reading $2 of an option that takes a value.
need_value() { (($# >= 2)) || die "$1 needs a value"; }
