"""A throw-away single-node Slurm cluster on localhost for the cluster-script tests.

Debian's `slurmctld`, `slurmd` and `munge` run in the foreground as children of the test
process, with everything (config, state, spool, logs, munge key and socket) in one temporary
directory and free TCP ports, so nothing of the machine's own Slurm/munge set-up is used or
touched. The node declares 4 GPUs whose device files are symlinks to /dev/null: Slurm allocates
them and sets CUDA_VISIBLE_DEVICES like on a real GPU node; the jobs run on the CPU.

Accounting is off (no slurmdbd): job states come from `scontrol show job` (kept 10 minutes after
the end, MinJobAge) and from the job-completion log (JobCompType=jobcomp/filetxt), which also
records every requeue.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
DAEMONS = ["munged", "slurmctld", "slurmd"]
COMMANDS = ["sbatch", "scontrol", "squeue", "scancel", "sinfo"]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED", "SPECIAL_EXIT"}
NODE = "ci-node"
GPUS = 4


def _have_slurm() -> bool:
    return all(shutil.which(c) or Path("/usr/sbin", c).exists() for c in DAEMONS + COMMANDS)


def install_slurm() -> str | None:
    """Install Slurm and munge with apt if they are missing; None when ready, else why not."""
    if _have_slurm():
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root"
    if not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    out = ""
    for attempt in range(2):  # a fresh machine may need its package lists first
        if attempt:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600)
        r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        out = (r.stdout + r.stderr).strip()
        if r.returncode == 0 and _have_slurm():
            return None
    return "apt-get could not install Slurm: " + (out.splitlines()[-1] if out else "no output")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "jobcomp.txt"
        self.logs = self.root / "log"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**clean_env(), "SLURM_CONF": str(self.conf)}

    # -- set-up ---------------------------------------------------------------------------------
    def write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)  # munged wants its socket directory searchable
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        for i in range(GPUS):
            dev = r / f"gpu{i}"
            if not dev.is_symlink():
                dev.symlink_to("/dev/null")
        (r / "gres.conf").write_text(f"NodeName={NODE} Name=gpu File={r}/gpu[0-{GPUS - 1}]\n")
        host = socket.gethostname().split(".")[0]
        ctld_port, d_port = free_ports(2)
        self.conf.write_text(f"""\
ClusterName=flowpwm-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again after this many seconds (default 120)
AuthInfo=socket={r}/munge.socket,cred_expire=5
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# the node below claims more CPUs than the machine has: trust the config, not the hardware
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
MailProg=/bin/true
MinJobAge=600
KillWait=10
GresTypes=gpu
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs=16 RealMemory=16000 Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _start(self, name: str, args: list[str]) -> None:
        out = open(self.logs / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen([_daemon(name), *args], stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env, cwd=self.root)
        out.close()

    def start(self, timeout: float = 60) -> None:
        r = self.root
        self.write_config()
        self._start("munged", ["--foreground", "--force", f"--key-file={r}/munge.key", f"--socket={r}/munge.socket",
                               f"--pid-file={r}/munged.pid", f"--seed-file={r}/munged.seed",
                               f"--log-file={r}/log/munged.log"])
        self._wait(lambda: (r / "munge.socket").exists(), timeout, "munged did not create its socket")
        self._start("slurmctld", ["-D", "-i"])
        self._wait(lambda: self.run(["scontrol", "ping"], check=False).returncode == 0, timeout,
                   "slurmctld does not answer `scontrol ping`")
        self._start("slurmd", ["-D", "-N", NODE])
        self._wait(self._node_idle, timeout, f"node {NODE} is not idle")

    def _node_idle(self) -> bool:
        out = self.run(["sinfo", "-h", "-n", NODE, "-o", "%T"], check=False).stdout.strip()
        return out.startswith("idle")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with status {p.returncode} while starting\n{self.diagnostics()}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} after {timeout:.0f} s\n{self.diagnostics()}")

    def stop(self) -> None:
        """Cancel what is left of the jobs, then stop the daemons (by their PIDs)."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            jobs = self.run(["squeue", "-h", "-o", "%A"], check=False).stdout.split()
            if jobs:
                self.run(["scancel", *jobs], check=False)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and self.run(["squeue", "-h", "-o", "%A"], check=False).stdout.split():
                    time.sleep(0.5)
        for name in reversed(DAEMONS):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # -- use --------------------------------------------------------------------------------------
    def run(self, args: list[str], check: bool = True, env: dict | None = None, timeout: float = 60,
            **kwargs) -> subprocess.CompletedProcess:
        r = subprocess.run(args, env=env or self.env, capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
        return r

    def job(self, job_id: str | int) -> dict[str, str]:
        """`scontrol show job` as a dict ({} once Slurm has forgotten the job)."""
        out = self.run(["scontrol", "-o", "show", "job", str(job_id)], check=False).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out.splitlines()[0])) if out.strip() else {}

    def completions(self) -> list[dict[str, str]]:
        """Records of the job-completion log: one per end of a job, requeues included."""
        if not self.jobcomp.exists():
            return []
        return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in self.jobcomp.read_text().splitlines() if line]

    def wait(self, job_id: str | int, timeout: float = 300) -> dict[str, str]:
        """Wait until the job has ended for good (not merely requeued); its final record."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in TERMINAL:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still {self.job(job_id).get('JobState')} after {timeout:.0f} s\n"
                           f"{self.diagnostics()}")

    def diagnostics(self) -> str:
        parts = []
        for f in sorted(self.logs.glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {f.name} (last lines)\n" + "\n".join(lines))
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            parts.append("--- squeue\n" + self.run(["squeue"], check=False).stdout)
        return "\n".join(parts)


def clean_env() -> dict[str, str]:
    """This process's environment without settings that would change what the cluster tests do:
    a developer's Slurm (SLURM_*, SBATCH_*), submitit and flowpwm cluster settings, and the
    variables the job scripts read."""
    drop = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SUBMITIT_", "FLOWPWM_")
    names = {"RUN_NAME", "STRATEGY", "SEEDS", "TASKS"}  # read by the job scripts
    return {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in names}
