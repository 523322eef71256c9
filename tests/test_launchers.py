"""init_distributed through the real launchers (2 CPU ranks, gloo) and the Slurm nodelist parser."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from megajepa import distributed as md

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "probes" / "allreduce_probe.py"
BIN = Path(sys.executable).parent
_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "TORCHELASTIC_RUN_ID", "CROSS_RANK", "LOCAL_SIZE")


def _clean_env() -> dict:
    # a test run inside srun/mpirun/torchrun must not leak its own topology into the children
    env = {k: v for k, v in os.environ.items()
           if k not in _LAUNCH_VARS and not k.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_", "MPI_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], timeout: int = 240) -> list[dict]:
    p = subprocess.run(cmd, cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{cmd} failed ({p.returncode}):\n{out[-3000:]}"
    # launchers may interleave lines; every record starts with the PROBE marker
    recs = [json.loads(chunk.split("}")[0] + "}") for chunk in out.split("PROBE ")[1:]]
    return sorted(recs, key=lambda r: r["rank"])


def _check(recs: list[dict], world: int, launcher: str) -> None:
    assert [r["rank"] for r in recs] == list(range(world)), recs
    expected_sum = sum(range(world))  # all_reduce(SUM) of the ranks, computed independently
    for r in recs:
        assert r["world"] == world and r["launcher"] == launcher and r["sum"] == expected_sum, r
        assert r["group_rank"] == r["rank"]  # the process group agrees with the launcher's rank


@pytest.mark.slow
def test_plain_python_single_process():
    _check(_run([sys.executable, str(PROBE)]), 1, "single")


@pytest.mark.slow
def test_torchrun_two_ranks():
    _check(_run([str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", str(_port()),
                 str(PROBE)]), 2, "torchrun")


@pytest.mark.slow
def test_deepspeed_launcher_two_ranks():
    port = _port()
    _check(_run([str(BIN / "deepspeed"), "--num_gpus", "2", "--master_port", str(port),
                 str(PROBE)]), 2, "deepspeed")
    # DeepSpeed's CPU shm allreduce would leave 69 MB per rank in /dev/shm, never unlinked
    leftovers = list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    assert not leftovers, leftovers


@pytest.mark.slow
def test_mpiexec_two_ranks():
    mpiexec = BIN / "mpiexec" if (BIN / "mpiexec").exists() else shutil.which("mpiexec")
    if not mpiexec:
        pytest.skip("no mpiexec (install mpich into the venv)")
    pytest.importorskip("mpi4py")
    _check(_run([str(mpiexec), "-n", "2", sys.executable, str(PROBE)]), 2, "mpi")


# --------------------------------------------------------------------------- nodelist parsing
NODELISTS = {
    "node[01-03,7],gpu5": ["node01", "node02", "node03", "node7", "gpu5"],
    "localhost": ["localhost"],
    "a[8-11]": ["a8", "a9", "a10", "a11"],
    "rack[1-2]-n[001-002]": ["rack1-n001", "rack1-n002", "rack2-n001", "rack2-n002"],
    "x1,y[0009-0010],z": ["x1", "y0009", "y0010", "z"],
}


@pytest.mark.parametrize("spec", sorted(NODELISTS))
def test_expand_nodelist_hand_written(spec):
    assert md.expand_nodelist(spec) == NODELISTS[spec]


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.parametrize("spec", sorted(NODELISTS))
def test_expand_nodelist_matches_scontrol(spec, tmp_path, slurm_installed):
    """Against Slurm's own expansion; a fresh machine gets Slurm installed first (it skipped there before,
    when this ran ahead of the cluster tests that install it)."""
    env = dict(os.environ)
    if not os.path.exists(env.get("SLURM_CONF", "/etc/slurm/slurm.conf")):
        # scontrol refuses to start without some config, even for pure string expansion
        conf = tmp_path / "slurm.conf"
        conf.write_text("ClusterName=t\nSlurmctldHost=localhost\nNodeName=localhost CPUs=1\n"
                        "PartitionName=p Nodes=localhost\n")
        env["SLURM_CONF"] = str(conf)
    p = subprocess.run(["scontrol", "show", "hostnames", spec], capture_output=True, text=True,
                       timeout=20, env=env)
    if p.returncode != 0:
        pytest.skip(f"scontrol show hostnames failed: {p.stderr.strip()}")
    assert md.expand_nodelist(spec) == p.stdout.split()


@pytest.mark.parametrize("bad", ["node[01-03", "node]1", "n[a-b]", "n[5-3]"])
def test_expand_nodelist_rejects_bad(bad):
    with pytest.raises(ValueError, match="nodelist"):
        md.expand_nodelist(bad)


@pytest.fixture
def bare_env(monkeypatch):
    for k in list(os.environ):
        if k in _LAUNCH_VARS or k.startswith(("SLURM_", "OMPI_", "PMI_", "PMIX_")):
            monkeypatch.delenv(k)


def test_tasks_per_node_spec():
    assert md._expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]


def test_detect_slurm_env(monkeypatch, bare_env):
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_NODEID", "2")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "2(x4)")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[3-6]")
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    info = md.detect()
    assert (info.rank, info.local_rank, info.world_size, info.local_world_size) == (5, 1, 8, 2)
    assert info.master_addr == "gpu3" and info.launcher == "slurm"
    assert info.master_port == 10000 + 123456 % 50000


def test_batch_shell_is_not_srun(monkeypatch, bare_env):
    # the sbatch batch shell has SLURM_PROCID/NTASKS but is one process, not a job step
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setattr(sys, "modules", {k: v for k, v in sys.modules.items() if k != "mpi4py.MPI"})
    assert md.detect().launcher == "single"


def test_env_without_master_is_clear_error(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        md.detect()
