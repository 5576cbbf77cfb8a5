#!/bin/bash
# Submit flowpwm training to Slurm after checking every argument: nothing is submitted unless
# all of them are valid. `cluster/submit_job.sh --help` for usage and examples.
set -uo pipefail

PROG=cluster/submit_job.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage_line() {
    echo "usage: $PROG single|multi [options] [hydra overrides key=value ...]   ($PROG --help for options and examples)"
}

usage() {
    cat <<EOF
usage: $PROG single|multi [options] [hydra overrides key=value ...]

  single   one run on 1 GPU, then its plots                              (cluster/slurm_single_gpu.sh)
  multi    4 runs in parallel on the 4 GPUs of one node, one GPU each,   (cluster/slurm_multi_gpu.sh)
           then a comparison of the 4

What to run:
  --alg NAME           algorithm config configs/alg/NAME.yaml: $(alg_names)
  --wm mlp|flow        baseline or flow world model of the --alg size
  --task TASK          env.task (dm_control domain-task or a gymnasium MuJoCo id)
  --seed N             seed (single, multi_task)
  --strategy S         multi: multi_seed (default, 4 seeds) | multi_task (4 tasks) |
                       baseline_vs_flow (2 seeds x {mlp, flow})                         [STRATEGY]
  --seeds "A B ..."    multi_seed: 4 seeds (default "0 1 2 3"); baseline_vs_flow: 2 (default "0 1") [SEEDS]
  --tasks "A B C D"    multi_task: 4 tasks (default "cartpole-swingup walker-walk cheetah-run
                       finger-spin")                                                    [TASKS]
  --name NAME          run directory name (default slurm-<job id>); a name that exists is continued [RUN_NAME]
  --runs DIR           where run directories go (default <checkout>/runs); Slurm logs go to
                       DIR/slurm-logs                                                  [FLOWPWM_RUNS]
  key=value ...        any other Hydra override, given to every run (e.g. train.env_steps=1000000)

Slurm resources (default: the FLOWPWM_... variable if set, else the job script's #SBATCH line or
the cluster's default; sbatch's own SBATCH_* variables work too):
  --account A          [FLOWPWM_ACCOUNT]     --partition P   [FLOWPWM_PARTITION]
  --qos Q              [FLOWPWM_QOS]         --constraint C  [FLOWPWM_CONSTRAINT]
  --time T             time limit: MM, HH:MM:SS or D-HH:MM:SS (default 24:00:00)  [FLOWPWM_TIME]
  --gpus N             1 for single, 4 for multi (one run per GPU)
  --gpu-type TYPE      typed GPUs, --gres=gpu:TYPE:N (e.g. h100)                   [FLOWPWM_GPU_TYPE]
  --cpus N             CPUs per GPU (default 8)                                   [FLOWPWM_CPUS_PER_GPU]
  --mem M              memory of the job, e.g. 64G (default 32G single, 128G multi) [FLOWPWM_MEM]
  --signal-secs S      SIGUSR1 this many seconds before the time limit: checkpoint + requeue (300)
  --sbatch OPTION      any other sbatch option, repeatable: --sbatch=--exclusive --sbatch=--mail-type=END

Environment on the compute node:
  --modules "M1 M2"    modules to load first                  [FLOWPWM_MODULES]
  --activate ENV       virtualenv dir, script to source or conda env name
                       (default: <checkout>/.venv if it exists)  [FLOWPWM_ACTIVATE]

  --dry-run            print the sbatch command instead of running it (every run's config is
                       composed and checked by `flowpwm check-config` first, with or without it)
  -h, --help           this help

Examples:
  $PROG single --alg pwm_5M_flow --task walker-walk --seed 1
  $PROG single --alg pwm_48M_flow --time 48:00:00 --account ACCOUNT --partition PARTITION
  $PROG multi --strategy multi_seed --alg pwm_5M --seeds "0 1 2 3"
  $PROG multi --strategy multi_task --alg pwm_5M_flow --tasks "walker-walk cheetah-run cup-catch finger-spin"
  $PROG multi --strategy baseline_vs_flow --alg pwm_48M --seeds "0 1" train.env_steps=1000000
  $PROG single --name flow48m_s1 --alg pwm_48M_flow --seed 1    # resubmit later: it continues
  FLOWPWM_ACCOUNT=ACCOUNT FLOWPWM_MODULES="cuda/12.4" $PROG multi --dry-run

Runs are preemption-safe: Slurm signals the job before its time limit, training writes a
checkpoint, the job requeues itself and continues. See docs/en/cluster.md.
EOF
}

die() {
    echo "$PROG: error: $*" >&2
    usage_line >&2
    exit 2
}

alg_names() {
    local f names=()
    for f in "$ROOT"/configs/alg/*.yaml; do
        [[ -f $f ]] && names+=("$(basename "$f" .yaml)")
    done
    echo "${names[*]:-none found in $ROOT/configs/alg}"
}

check_alg() {  # $1: the value given, $2: where it came from
    [[ $1 == *,* ]] && die "$2=$1: one config per job; for sweeps use flowpwm train -m hydra/launcher=slurm"
    [[ $1 =~ ^[A-Za-z0-9_.-]+$ && -f $ROOT/configs/alg/$1.yaml ]] ||
        die "missing config: $2=$1 has no configs/alg/$1.yaml (choose one of: $(alg_names))"
}

is_int() { [[ $1 =~ ^[0-9]+$ ]]; }

# Numbers and names --------------------------------------------------------------------------
[[ $# -gt 0 ]] || die "missing mode: single or multi"
case $1 in
    -h | --help) usage; exit 0 ;;
    single | multi) MODE=$1; shift ;;
    *) die "unknown mode '$1': choose single or multi" ;;
esac

# The job scripts read these from the environment too: take them as defaults, and check them.
ENV_STRATEGY=${STRATEGY:-} ENV_SEEDS=${SEEDS:-} ENV_TASKS=${TASKS:-}
ALG="" WM="" TASK="" SEED="" GPUS="" DRY_RUN=0 STRATEGY="" SEEDS="" TASKS=""
NAME=${RUN_NAME:-} RUNS=${FLOWPWM_RUNS:-}
ACCOUNT=${FLOWPWM_ACCOUNT:-} PARTITION=${FLOWPWM_PARTITION:-} QOS=${FLOWPWM_QOS:-}
CONSTRAINT=${FLOWPWM_CONSTRAINT:-} TIME=${FLOWPWM_TIME:-} GPU_TYPE=${FLOWPWM_GPU_TYPE:-}
CPUS=${FLOWPWM_CPUS_PER_GPU:-} MEM=${FLOWPWM_MEM:-} SIGNAL_SECS=300
MODULES=${FLOWPWM_MODULES:-} ACTIVATE=${FLOWPWM_ACTIVATE:-}
EXTRA_SBATCH=()
OVERRIDES=()

while (($#)); do
    opt=$1
    # --opt=value is the same as --opt value
    if [[ $opt == --*=* ]]; then
        set -- "${opt%%=*}" "${opt#*=}" "${@:2}"
        opt=$1
    fi
    case $opt in
        -h | --help) usage; exit 0 ;;
        --dry-run) DRY_RUN=1; shift; continue ;;
        --alg | --wm | --task | --seed | --strategy | --seeds | --tasks | --name | --runs | --account | \
            --partition | --qos | --constraint | --time | --gpus | --gpu-type | --cpus | --mem | \
            --signal-secs | --sbatch | --modules | --activate)
            (($# >= 2)) || die "$opt needs a value"
            val=$2
            shift 2
            ;;
        --) shift; OVERRIDES+=("$@"); break ;;
        -*) die "unknown option '$opt'" ;;
        *) OVERRIDES+=("$opt"); shift; continue ;;
    esac
    case $opt in
        --alg) ALG=$val ;;
        --wm) WM=$val ;;
        --task) TASK=$val ;;
        --seed) SEED=$val ;;
        --strategy) STRATEGY=$val ;;
        --seeds) SEEDS=$val ;;
        --tasks) TASKS=$val ;;
        --name) NAME=$val ;;
        --runs) RUNS=$val ;;
        --account) ACCOUNT=$val ;;
        --partition) PARTITION=$val ;;
        --qos) QOS=$val ;;
        --constraint) CONSTRAINT=$val ;;
        --time) TIME=$val ;;
        --gpus) GPUS=$val ;;
        --gpu-type) GPU_TYPE=$val ;;
        --cpus) CPUS=$val ;;
        --mem) MEM=$val ;;
        --signal-secs) SIGNAL_SECS=$val ;;
        --sbatch) EXTRA_SBATCH+=("$val") ;;
        --modules) MODULES=$val ;;
        --activate) ACTIVATE=$val ;;
    esac
done

# Checks -------------------------------------------------------------------------------------
if [[ $MODE == single ]]; then
    [[ -z $STRATEGY ]] || die "--strategy is for multi jobs (single runs one config)"
    [[ -z $SEEDS && -z $TASKS ]] || die "--seeds/--tasks are for multi jobs; single takes --seed and --task"
    NEED_GPUS=1
else
    STRATEGY=${STRATEGY:-${ENV_STRATEGY:-multi_seed}}
    [[ -z $SEEDS && $STRATEGY != multi_task ]] && SEEDS=$ENV_SEEDS
    [[ -z $TASKS && $STRATEGY == multi_task ]] && TASKS=$ENV_TASKS
    case $STRATEGY in
        multi_seed | multi_task | baseline_vs_flow) ;;
        *) die "unknown strategy '$STRATEGY': choose multi_seed, multi_task or baseline_vs_flow" ;;
    esac
    NEED_GPUS=4
fi
if [[ -n $GPUS ]]; then
    { is_int "$GPUS" && ((10#$GPUS == NEED_GPUS)); } ||
        die "bad GPU count '--gpus $GPUS': $MODE needs exactly $NEED_GPUS (single: 1 GPU; multi: 4, one run per GPU)"
fi
[[ -z $GPU_TYPE || $GPU_TYPE =~ ^[A-Za-z0-9_.-]+$ ]] || die "bad --gpu-type '$GPU_TYPE'"

[[ -z $ALG ]] || check_alg "$ALG" --alg
if [[ -n $WM ]]; then
    [[ $WM == mlp || $WM == flow ]] || die "--wm $WM: choose mlp or flow"
fi
[[ -z $SEED ]] || is_int "$SEED" || die "--seed $SEED is not a non-negative integer"
[[ -z $TASK || $TASK =~ ^[A-Za-z0-9_.-]+$ ]] || die "--task '$TASK' is not a task name"
if [[ -n $SEEDS ]]; then
    [[ $STRATEGY == multi_seed || $STRATEGY == baseline_vs_flow ]] || die "--seeds is for multi_seed and baseline_vs_flow, not $STRATEGY"
    read -ra seed_list <<<"$SEEDS"
    for s in "${seed_list[@]}"; do is_int "$s" || die "--seeds '$SEEDS': '$s' is not a non-negative integer"; done
    want=4
    [[ $STRATEGY == baseline_vs_flow ]] && want=2
    ((${#seed_list[@]} == want)) || die "--seeds '$SEEDS': $STRATEGY needs $want seeds, got ${#seed_list[@]}"
fi
if [[ -n $TASKS ]]; then
    [[ $STRATEGY == multi_task ]] || die "--tasks is for --strategy multi_task"
    read -ra task_list <<<"$TASKS"
    for t in "${task_list[@]}"; do [[ $t =~ ^[A-Za-z0-9_.-]+$ ]] || die "--tasks '$TASKS': '$t' is not a task name"; done
    ((${#task_list[@]} == 4)) || die "--tasks '$TASKS': multi_task needs 4 tasks, got ${#task_list[@]}"
fi
[[ -n $SEED && $STRATEGY == multi_seed ]] && die "--seed: multi_seed sets the seeds itself (use --seeds)"
[[ -n $SEED && $STRATEGY == baseline_vs_flow ]] && die "--seed: baseline_vs_flow sets the seeds itself (use --seeds)"
[[ -n $TASK && $STRATEGY == multi_task ]] && die "--task: multi_task sets the tasks itself (use --tasks)"
[[ -n $WM && $STRATEGY == baseline_vs_flow ]] && die "--wm: baseline_vs_flow runs both world models itself"
[[ -z $NAME || $NAME =~ ^[A-Za-z0-9_.-]+$ ]] || die "--name '$NAME': use letters, digits, '.', '_' or '-'"

for o in "${OVERRIDES[@]}"; do
    key=${o#++}
    key=${key#+}
    key=${key#\~}
    [[ $o == *=* || $o == \~* ]] || die "'$o' is not a Hydra override (key=value) or an option"
    key=${key%%=*}
    val=${o#*=}
    case $key in
        alg) check_alg "$val" alg ;;
        wm) [[ $val == mlp || $val == flow ]] || die "wm=$val: choose wm=mlp or wm=flow (one per run)" ;;
        hydra.run.dir | resume) die "$key=...: the job script sets it (the run dir is --runs/--name; resume=auto)" ;;
        seed) [[ $STRATEGY == multi_seed || $STRATEGY == baseline_vs_flow ]] && die "seed=: $STRATEGY sets the seeds itself (use --seeds)" ;;
        env.task) [[ $STRATEGY == multi_task ]] && die "env.task=: multi_task sets the tasks itself (use --tasks)" ;;
    esac
    [[ $key == wm && $STRATEGY == baseline_vs_flow ]] && die "wm=: baseline_vs_flow runs both world models itself"
done

{ is_int "$SIGNAL_SECS" && ((10#$SIGNAL_SECS > 0)); } || die "--signal-secs '$SIGNAL_SECS' is not a positive number of seconds"
if [[ -n $TIME ]]; then
    [[ $TIME =~ ^[0-9]+(:[0-9]{1,2}){0,2}$ || $TIME =~ ^[0-9]+-[0-9]{1,2}(:[0-9]{1,2}){0,2}$ ]] ||
        die "bad --time '$TIME': use minutes, HH:MM:SS or D-HH:MM:SS"
fi
[[ -z $CPUS ]] || { is_int "$CPUS" && ((10#$CPUS > 0)); } || die "bad --cpus '$CPUS': a positive number of CPUs per GPU"
[[ -z $MEM || $MEM =~ ^[0-9]+[KMGTkmgt]?$ ]] || die "bad --mem '$MEM': e.g. 64G or 65536M"
if [[ -n $ACTIVATE && $ACTIVATE == */* && ! -e $ACTIVATE ]]; then
    die "--activate $ACTIVATE: no such virtualenv directory or script"
fi

# The config of every run, composed and checked by flowpwm itself ------------------------------
# (`flowpwm check-config`: unknown keys, types, ranges, tasks; CUDA is not looked for here).
check_config() {
    local env=${ACTIVATE:-} err
    if [[ -n $env && -x $env/bin/flowpwm ]]; then
        err=$("$env/bin/flowpwm" check-config "$@" 2>&1 >/dev/null)
    elif [[ -n $env && -f $env ]]; then
        # shellcheck disable=SC1090
        err=$(source "$env" >/dev/null 2>&1 && flowpwm check-config "$@" 2>&1 >/dev/null)
    elif [[ -n $env && $env != */* ]] && command -v conda >/dev/null 2>&1; then
        err=$(conda run -n "$env" flowpwm check-config "$@" 2>&1 >/dev/null)
    elif [[ -x $ROOT/.venv/bin/flowpwm ]]; then
        err=$("$ROOT/.venv/bin/flowpwm" check-config "$@" 2>&1 >/dev/null)
    elif command -v flowpwm >/dev/null 2>&1; then
        err=$(flowpwm check-config "$@" 2>&1 >/dev/null)
    else
        die "cannot check the job's config: no flowpwm here (install it, or pass --activate ENV)"
    fi && return 0
    [[ -n $err ]] || err="flowpwm check-config failed"
    while IFS= read -r line; do
        echo "$PROG: error: ${line#flowpwm check-config: error: }" >&2
    done <<<"$err"
    usage_line >&2
    exit 2
}

check_overrides=()
[[ -n $ALG ]] && check_overrides+=("alg=$ALG")
[[ -n $WM ]] && check_overrides+=("wm=$WM")
[[ -n $TASK ]] && check_overrides+=("env.task=$TASK")
[[ -n $SEED ]] && check_overrides+=("seed=$SEED")
check_overrides+=(resume=auto "device=${FLOWPWM_DEVICE:-cuda}" monitor.progress=lines "${OVERRIDES[@]}")
if [[ $MODE == multi ]]; then  # the four runs of the job, as slurm_multi_gpu.sh makes them
    join() { local IFS=,; echo "$*"; }
    case $STRATEGY in
        multi_seed) read -ra s <<<"${SEEDS:-0 1 2 3}"; check_overrides+=("seed=$(join "${s[@]}")") ;;
        multi_task) read -ra t <<<"${TASKS:-cartpole-swingup walker-walk cheetah-run finger-spin}"
            check_overrides+=("env.task=$(join "${t[@]}")") ;;
        baseline_vs_flow) read -ra s <<<"${SEEDS:-0 1}"; check_overrides+=("wm=mlp,flow" "seed=$(join "${s[@]}")") ;;
    esac
    check_config --no-hardware -m "${check_overrides[@]}"
else
    check_config --no-hardware "${check_overrides[@]}"
fi

# The sbatch command --------------------------------------------------------------------------
RUNS=${RUNS:-$ROOT/runs}
[[ $RUNS == /* ]] || RUNS=$PWD/$RUNS
if [[ $MODE == single ]]; then
    SCRIPT=$ROOT/cluster/slurm_single_gpu.sh
    JOB_NAME=flowpwm
else
    SCRIPT=$ROOT/cluster/slurm_multi_gpu.sh
    JOB_NAME=flowpwm-$STRATEGY
fi
gres=gpu:$NEED_GPUS
[[ -n $GPU_TYPE ]] && gres=gpu:$GPU_TYPE:$NEED_GPUS

cmd=(sbatch "--job-name=$JOB_NAME" "--gres=$gres" "--signal=B:USR1@$SIGNAL_SECS"
    "--output=$RUNS/slurm-logs/%x-%j.out")
[[ -n $ACCOUNT ]] && cmd+=("--account=$ACCOUNT")
[[ -n $PARTITION ]] && cmd+=("--partition=$PARTITION")
[[ -n $QOS ]] && cmd+=("--qos=$QOS")
[[ -n $CONSTRAINT ]] && cmd+=("--constraint=$CONSTRAINT")
[[ -n $TIME ]] && cmd+=("--time=$TIME")
[[ -n $CPUS ]] && cmd+=("--cpus-per-task=$((10#$CPUS * NEED_GPUS))")
[[ -n $MEM ]] && cmd+=("--mem=$MEM")
cmd+=("${EXTRA_SBATCH[@]}" "$SCRIPT" --runs "$RUNS")
[[ -n $NAME ]] && cmd+=(--name "$NAME")
[[ -n $MODULES ]] && cmd+=(--modules "$MODULES")
[[ -n $ACTIVATE ]] && cmd+=(--activate "$ACTIVATE")
if [[ $MODE == multi ]]; then
    cmd+=(--strategy "$STRATEGY")
    [[ -n $SEEDS ]] && cmd+=(--seeds "$SEEDS")
    [[ -n $TASKS ]] && cmd+=(--tasks "$TASKS")
fi
run_overrides=()
[[ -n $ALG ]] && run_overrides+=("alg=$ALG")
[[ -n $WM ]] && run_overrides+=("wm=$WM")
[[ -n $TASK ]] && run_overrides+=("env.task=$TASK")
[[ -n $SEED ]] && run_overrides+=("seed=$SEED")
run_overrides+=("${OVERRIDES[@]}")
((${#run_overrides[@]})) && cmd+=(-- "${run_overrides[@]}")

if ((DRY_RUN)); then
    printf '%q ' "${cmd[@]}" | sed 's/ $//'
    echo
    exit 0
fi
command -v sbatch >/dev/null 2>&1 || die "sbatch not found: run this on a Slurm login node (or use --dry-run)"
mkdir -p "$RUNS/slurm-logs" || die "cannot create $RUNS/slurm-logs"
out=$("${cmd[@]}") || {
    echo "$PROG: error: sbatch failed (command: ${cmd[*]})" >&2
    exit 1
}
echo "$out"
job=$(sed -n 's/.*Submitted batch job \([0-9]*\).*/\1/p' <<<"$out")
if [[ -n $job ]]; then
    echo "  log:      $RUNS/slurm-logs/$JOB_NAME-$job.out"
    echo "  run dir:  $RUNS/${NAME:-slurm-$job}"
    echo "  monitor:  squeue -j $job   |   scontrol show job $job   |   sacct -j $job"
fi
