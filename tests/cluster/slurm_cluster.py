"""A throwaway one-node Slurm cluster on 127.0.0.1 for tests: munge + slurmctld + slurmd in a temp dir.

`SlurmCluster.start()` installs Slurm with apt-get when it is missing (root only), writes a private
munge key and slurm.conf, starts the daemons in the foreground as child processes, and waits for the
node to be idle. Every failure to get there raises `ClusterUnavailable` with the reason, which the
pytest fixture turns into a skip. Clients must use `cluster.env` (it carries SLURM_CONF).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]


class ClusterUnavailable(RuntimeError):
    """Slurm cannot be installed or started here; the message says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_installed(timeout: float = 600) -> None:
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable("Slurm is not installed and we are not root (cannot apt-get install)")
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("Slurm is not installed and there is no apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(cmd)} failed: {p.stderr.strip()[-500:]}")


SLURM_CONF = """\
ClusterName=megajepa-test
SlurmctldHost=localhost({ctld_addr})
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool-%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
# no cgroups in a container: plain /proc process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
JobRequeue=1
ReturnToService=2
# no slurmdbd: keep finished jobs in scontrol for 5 min and log completions to a text file
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={d}/jobcomp.txt
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmdTimeout=300
SchedulerParameters=sched_interval=1
{node_lines}
PartitionName=test Nodes={node_names} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    ctld_addr = "127.0.0.1"
    nodes = {"localhost": "127.0.0.1"}  # node name -> address slurmctld reaches its slurmd at

    def __init__(self, root: str | None = None):
        self.dir = Path(root or tempfile.mkdtemp(prefix="megajepa-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self.procs: list[subprocess.Popen] = []
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 60) -> "SlurmCluster":
        ensure_installed()
        for sub in ("state", "munge", *(f"spool-{n}" for n in self.nodes)):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir / "munge", 0o700)
        key = self.dir / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        sock = self.dir / "munge" / "munge.socket"
        # --force: munged refuses keys under world-writable parents such as /tmp otherwise
        self._spawn(["munged", "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
                     f"--pid-file={self.dir}/munge/munged.pid", f"--seed-file={self.dir}/munge/seed",
                     f"--log-file={self.dir}/munge/munged.log"], "munged")
        self._wait(lambda: sock.exists(), 10, "munged socket")
        cpus = os.cpu_count() or 1
        node_lines = "\n".join(f"NodeName={n} NodeAddr={a} CPUs={cpus} State=UNKNOWN" for n, a in self.nodes.items())
        self.conf.write_text(SLURM_CONF.format(d=self.dir, ctld_port=_free_port(), slurmd_port=_free_port(),
                                               munge_socket=sock, ctld_addr=self.ctld_addr, node_lines=node_lines,
                                               node_names=",".join(self.nodes)))
        self._spawn(["slurmctld", "-D", "-i", "-f", str(self.conf)], "slurmctld")
        for name in self.nodes:
            self._spawn(self.slurmd_command(name), f"slurmd-{name}")
        self._wait(self.node_idle, timeout, "nodes idle in sinfo")
        return self

    def slurmd_command(self, node: str) -> list[str]:
        return ["slurmd", "-D", "-f", str(self.conf), "-N", node]

    def stop(self) -> None:
        # jobs first (their processes belong to slurmd), then daemons in reverse start order
        if self.conf.exists():
            subprocess.run(["scancel", "--full", "--user=root"], env=self.env, capture_output=True, timeout=20)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)
        self.procs.clear()

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers
    def _spawn(self, cmd: list[str], name: str) -> None:
        log = open(self.dir / f"{name}.stdout", "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.procs.append(p)
        time.sleep(0.3)
        if p.poll() is not None:
            self.stop()
            raise ClusterUnavailable(f"{name} exited at start (rc={p.returncode}):\n{self.logs(name)}")

    def _wait(self, ok, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if ok():
                return
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.5)
        logs = "\n".join(self.logs(n) for n in ("munged", "slurmctld", *(f"slurmd-{n}" for n in self.nodes)))
        self.stop()
        raise ClusterUnavailable(f"timed out waiting for {what} (dead: {dead}):\n{logs[-3000:]}")

    def logs(self, name: str) -> str:
        parts = []
        for f in (self.dir / f"{name}.stdout", self.dir / f"{name}.log", self.dir / "munge" / f"{name}.log"):
            if f.exists():
                parts.append(f"--- {f}\n{f.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def node_idle(self) -> bool:
        p = self.run("sinfo", "-h", "-N", "-o", "%T", timeout=10, check=False)
        states = p.stdout.split()
        return p.returncode == 0 and len(states) == len(self.nodes) and all(s.lower().startswith("idle") for s in states)

    # ------------------------------------------------------------------ jobs
    def sbatch(self, *args: str, env: dict | None = None, cwd: str | None = None) -> int:
        p = subprocess.run(["sbatch", "--parsable", *args], env={**self.env, **(env or {})}, cwd=cwd,
                           capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"sbatch {' '.join(args)} failed: {p.stderr.strip()}")
        return int(p.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, ExitCode, Restarts, StdOut, ...); {} if purged."""
        p = self.run("scontrol", "-o", "show", "job", str(job_id), check=False)
        if p.returncode != 0:
            return {}
        return dict(re.findall(r"(\w+)=(\S*)", p.stdout))

    def wait_job(self, job_id: int, timeout: float = 120,
                 until: tuple[str, ...] = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                                           "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED")) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            info = self.job(job_id)
            if info.get("JobState") in until:
                return info
            time.sleep(0.5)
        self.run("scancel", str(job_id), check=False)
        raise TimeoutError(f"job {job_id} not in {until} after {timeout}s: {self.job(job_id)}\n"
                           f"{self.logs('slurmd')}")
