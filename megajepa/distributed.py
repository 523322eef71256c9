"""One process-group bootstrap for every launcher: deepspeed/torchrun env, Slurm srun, MPI, plain python.

`init_distributed()` works out rank/world/master from whatever launched us, exports the
torch.distributed env contract (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), then calls
`deepspeed.init_distributed` once.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from itertools import product
from typing import NoReturn

import torch
import torch.distributed as dist

_log = logging.getLogger(__name__)
_INFO: "DistInfo | None" = None

# Env vars that only an MPI launcher (OpenMPI, MPICH/Hydra, PMIx, Intel MPI) sets.
_MPI_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    master_addr: str
    master_port: int
    launcher: str  # "deepspeed" | "torchrun" | "env" | "slurm" | "mpi" | "single"


# ----------------------------------------------------------------------------- Slurm helpers
def _split_top_level(spec: str) -> list[str]:
    """Split on commas that are not inside [...]."""
    parts, depth, cur = [], 0, []
    for ch in spec:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in Slurm nodelist {spec!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in Slurm nodelist {spec!r}")
    parts.append("".join(cur))
    return [p for p in (s.strip() for s in parts) if p]


def _expand_range(body: str, spec: str) -> list[str]:
    out = []
    for item in body.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", item)
        if not m:
            raise ValueError(f"bad range {item!r} in Slurm nodelist {spec!r}")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        width = len(lo)  # zero padding comes from the first bound, as Slurm does
        if int(hi) < int(lo):
            raise ValueError(f"descending range {item!r} in Slurm nodelist {spec!r}")
        out += [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    return out


def expand_nodelist(spec: str) -> list[str]:
    """Pure-python `scontrol show hostnames`: 'node[01-03,7],gpu5' -> node01 node02 node03 node7 gpu5."""
    hosts: list[str] = []
    for part in _split_top_level(spec):
        # alternate literal text and bracket groups; hosts are their cartesian product
        pieces = re.split(r"\[([^\]]*)\]", part)
        choices = [[p] if i % 2 == 0 else _expand_range(p, spec) for i, p in enumerate(pieces)]
        hosts += ["".join(c) for c in product(*choices)]
    return hosts


def slurm_hostnames(spec: str) -> list[str]:
    """Hostnames of a nodelist: `scontrol show hostnames` when it runs, else the python parser."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", spec], capture_output=True,
                                 text=True, timeout=20, check=True).stdout.split()
            if out:
                return out
        except (subprocess.SubprocessError, OSError):
            pass
    return expand_nodelist(spec)


def _expand_tasks_per_node(spec: str) -> list[int]:
    """'2(x3),1' -> [2, 2, 2, 1] (SLURM_TASKS_PER_NODE format)."""
    out = []
    for item in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
        if not m:
            raise ValueError(f"bad SLURM tasks-per-node spec {spec!r}")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def slurm_master_port(job_id: int) -> int:
    """Deterministic per-job port so every task agrees without talking: 10000 + jobid % 50000."""
    return 10000 + int(job_id) % 50000


# ----------------------------------------------------------------------------- detection
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _from_env() -> DistInfo:
    e = os.environ
    if "TORCHELASTIC_RUN_ID" in e:
        launcher = "torchrun"
    elif "CROSS_RANK" in e or "DS_ACCELERATOR" in e or "LOCAL_SIZE" in e:
        launcher = "deepspeed"  # deepspeed.launcher.launch exports CROSS_RANK/LOCAL_SIZE
    else:
        launcher = "env"
    world = int(e["WORLD_SIZE"])
    local_world = int(e.get("LOCAL_WORLD_SIZE", e.get("LOCAL_SIZE", world)))
    if "MASTER_ADDR" not in e or "MASTER_PORT" not in e:
        raise RuntimeError("RANK/WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not; "
                           "export both or launch with torchrun/deepspeed")
    return DistInfo(int(e["RANK"]), int(e.get("LOCAL_RANK", 0)), world, local_world,
                    e["MASTER_ADDR"], int(e["MASTER_PORT"]), launcher)


def _in_srun() -> bool:
    # SLURM_PROCID alone also exists in the sbatch batch shell (one process): require a job step.
    e = os.environ
    return "SLURM_PROCID" in e and ("SLURM_STEP_ID" in e or "SLURM_STEPID" in e)


def _from_slurm() -> DistInfo:
    e = os.environ
    world = int(e.get("SLURM_STEP_NUM_TASKS", e.get("SLURM_NTASKS", "1")))
    node_id = int(e.get("SLURM_NODEID", "0"))
    tpn = e.get("SLURM_STEP_TASKS_PER_NODE") or e.get("SLURM_TASKS_PER_NODE")
    local_world = _expand_tasks_per_node(tpn)[node_id] if tpn else world
    nodelist = e.get("SLURM_STEP_NODELIST") or e.get("SLURM_JOB_NODELIST") or e.get("SLURM_NODELIST")
    addr = e.get("MASTER_ADDR") or (slurm_hostnames(nodelist)[0] if nodelist else "127.0.0.1")
    port = int(e["MASTER_PORT"]) if "MASTER_PORT" in e else slurm_master_port(int(e.get("SLURM_JOB_ID", "0")))
    return DistInfo(int(e["SLURM_PROCID"]), int(e.get("SLURM_LOCALID", "0")), world, local_world,
                    addr, port, "slurm")


def _mpi_hinted() -> bool:
    return any(v in os.environ for v in _MPI_RANK_VARS) or "mpi4py.MPI" in sys.modules


def _from_mpi() -> DistInfo:
    e = os.environ
    try:
        from mpi4py import MPI
    except ImportError:
        MPI = None
    if MPI is None:  # env-only: OpenMPI / MPICH export enough for a single node
        rank = int(next(e[v] for v in _MPI_RANK_VARS if v in e))
        world = int(e.get("OMPI_COMM_WORLD_SIZE", e.get("PMI_SIZE", "0")) or 0)
        if not world:
            raise RuntimeError("MPI launch detected but mpi4py is missing and the world size is "
                               "not in the env; pip install mpi4py")
        local_rank = int(e.get("OMPI_COMM_WORLD_LOCAL_RANK", e.get("MPI_LOCALRANKID", rank)))
        local_world = int(e.get("OMPI_COMM_WORLD_LOCAL_SIZE", e.get("MPI_LOCALNRANKS", world)))
        if "MASTER_ADDR" not in e and local_world != world:
            raise RuntimeError("multi-node MPI launch without mpi4py: export MASTER_ADDR")
        addr = e.get("MASTER_ADDR", "127.0.0.1")
        port = int(e.get("MASTER_PORT", 29500))
        return DistInfo(rank, local_rank, world, local_world, addr, port, "mpi")
    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    local_rank, local_world = local.Get_rank(), local.Get_size()
    local.Free()
    if rank == 0:  # rank 0 is the rendezvous host; it tells everyone where it is
        one_node = local_world == world
        addr = e.get("MASTER_ADDR") or ("127.0.0.1" if one_node else socket.gethostbyname(socket.gethostname()))
        port = int(e["MASTER_PORT"]) if "MASTER_PORT" in e else (_free_port() if one_node else 29500)
    else:
        addr, port = None, None
    addr, port = comm.bcast((addr, port), root=0)
    return DistInfo(rank, local_rank, world, local_world, addr, int(port), "mpi")


def detect() -> DistInfo:
    """Work out the launch topology without touching torch.distributed."""
    e = os.environ
    if "RANK" in e and "WORLD_SIZE" in e:
        return _from_env()
    # MPI before Slurm: mpirun inside an allocation inherits SLURM_* of its (per-node) daemons.
    if _mpi_hinted():
        return _from_mpi()
    if _in_srun():
        return _from_slurm()
    return DistInfo(0, 0, 1, 1, "127.0.0.1", int(e.get("MASTER_PORT") or _free_port()), "single")


# ----------------------------------------------------------------------------- public API
def _info_from_group(launcher: str) -> DistInfo:
    e = os.environ
    return DistInfo(dist.get_rank(), int(e.get("LOCAL_RANK", 0)), dist.get_world_size(),
                    int(e.get("LOCAL_WORLD_SIZE", 1)), e.get("MASTER_ADDR", ""),
                    int(e.get("MASTER_PORT", 0)), launcher)


def _without_shm_allreduce() -> None:
    """Keep DeepSpeed's CPU shared-memory allreduce off; gloo does the CPU collectives.

    That op leaves a 69 MB /dev/shm file per rank per run that is never unlinked (RAM, on tmpfs)
    and reopens a stale file of the same port by name, so repeated runs fill memory or hang.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def init_distributed(timeout_minutes: float = 10.0) -> DistInfo:
    """Detect the launcher, export the torch env contract and initialise the process group once."""
    global _INFO
    if dist.is_available() and dist.is_initialized():
        if _INFO is None:
            _INFO = _info_from_group("preinitialized")
        return _INFO
    info = detect()
    os.environ.update(RANK=str(info.rank), LOCAL_RANK=str(info.local_rank),
                      WORLD_SIZE=str(info.world_size), LOCAL_WORLD_SIZE=str(info.local_world_size),
                      MASTER_ADDR=info.master_addr, MASTER_PORT=str(info.master_port))
    cuda = torch.cuda.is_available()
    if cuda:  # before the process group so NCCL binds this rank's GPU
        torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
    msg = (f"megajepa.distributed: launcher={info.launcher} rank={info.rank}/{info.world_size} "
           f"local={info.local_rank}/{info.local_world_size} master={info.master_addr}:{info.master_port}")
    if _log.hasHandlers():
        _log.info(msg)
    else:
        print(msg, file=sys.stderr, flush=True)
    import deepspeed  # heavy import, only when we really start a group

    if not cuda:
        _without_shm_allreduce()
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", auto_mpi_discovery=False,
                               distributed_port=info.master_port, verbose=False,
                               timeout=timedelta(minutes=timeout_minutes),
                               rank=info.rank, world_size=info.world_size)
    _INFO = info
    return info


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def barrier() -> None:
    if is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def exit_process(code: int) -> NoReturn:
    """Flush and exit with `code`, skipping interpreter finalization.

    During finalization gloo's worker threads can still drop tensors held by DeepSpeed's async
    handles and abort the process (SIGABRT, "terminate called without an active exception";
    pytorch/pytorch#179291): a clean exit 3 or 75 would reach the launcher as -6. Call it after
    shutdown(), when everything the process writes is closed.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def shutdown() -> None:
    """Destroy the process group (idempotent); call at the end of a run."""
    global _INFO
    if is_initialized():
        dist.destroy_process_group()
    _INFO = None
