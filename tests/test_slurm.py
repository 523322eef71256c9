"""The sbatch scripts on a real one-node Slurm cluster: srun launch, args, requeue, a tiny training run."""
import json
import os
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
# a CPU-only one-node cluster: sbatch's command line overrides the scripts' 8x8-GPU #SBATCH lines
SMALL = ["--nodes=1", "--gpus-per-node=0", "--cpus-per-task=1", "--time=10"]


def _env(**extra) -> dict:
    # the submitting shell's launcher vars must not leak into the job; PYTHON = this interpreter
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHON=sys.executable, OMP_NUM_THREADS="1", **extra)
    return env


def _submit(cluster, tmp_path, script, *args, tasks=2, **env):
    out = tmp_path / f"{Path(script).stem}.out"
    jid = cluster.sbatch(*SMALL, f"--ntasks-per-node={tasks}", f"--output={out}", f"--error={out}",
                         str(ROOT / "slurm" / script), *args, env=_env(**env), cwd=str(ROOT))
    return jid, out


def _probes(text: str) -> list[dict]:
    return sorted((json.loads(c.split("}")[0] + "}") for c in text.split("PROBE ")[1:]), key=lambda r: r["rank"])


@pytest.mark.slow
def test_pretrain_script_runs_two_ranks_under_srun(slurm_cluster, tmp_path):
    run = tmp_path / "run"
    jid, out = _submit(slurm_cluster, tmp_path, "pretrain_8node.sh", f"OUTPUT_DIR={run}", "train.max_steps=3",
                       TRAIN_SCRIPT="tests/probes/allreduce_probe.py", EXTRA_ARGS="a.b=1 c=2")
    job = slurm_cluster.wait_job(jid, timeout=90)
    log = out.read_text()
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (job, log)
    recs = _probes(log)
    assert [r["rank"] for r in recs] == [0, 1], log
    assert all(r["world"] == 2 and r["launcher"] == "slurm" and r["sum"] == 0 + 1 for r in recs), recs
    assert [r["local_rank"] for r in recs] == [0, 1], recs
    # the train command line the script built: config, output dir, resume=auto, overrides in order
    cmd = next(line for line in log.splitlines() if "tests/probes/allreduce_probe.py" in line)
    assert cmd.endswith(f"--deepspeed_config ds_configs/zero3.json output_dir={run} resume=auto a.b=1 c=2 "
                        "train.max_steps=3"), cmd


@pytest.mark.slow
def test_continue_script_requires_hf_dir(slurm_cluster, tmp_path):
    jid, out = _submit(slurm_cluster, tmp_path, "continue_pretrain.sh", tasks=1,
                       TRAIN_SCRIPT="tests/probes/allreduce_probe.py")
    job = slurm_cluster.wait_job(jid, timeout=60)
    assert job["JobState"] == "FAILED" and job["ExitCode"] == "2:0", job
    assert "HF_DIR is not set" in out.read_text()


@pytest.mark.slow
def test_usr1_checkpoints_then_requeues(slurm_cluster, tmp_path):
    """Requeue path: USR1 to the batch shell -> forwarded to the step -> step exits -> scontrol requeue."""
    jid, out = _submit(slurm_cluster, tmp_path, "pretrain_8node.sh", f"OUTPUT_DIR={tmp_path / 'run'}", tasks=1,
                       TRAIN_SCRIPT="tests/probes/requeue_probe.py")
    end = time.monotonic() + 60
    while "REQUEUE_PROBE start restart=0" not in (out.read_text() if out.exists() else ""):
        assert time.monotonic() < end, (slurm_cluster.job(jid), out.read_text() if out.exists() else "")
        time.sleep(0.3)
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", str(jid))  # what --signal=B:USR1@120 sends
    end = time.monotonic() + 60
    while (job := slurm_cluster.job(jid)).get("Restarts", "0") == "0" or job["JobState"] != "PENDING":
        assert job["JobState"] not in ("COMPLETED", "FAILED", "CANCELLED"), (job, out.read_text())
        assert time.monotonic() < end, (job, out.read_text())
        time.sleep(0.3)
    # Slurm holds a requeued job ~2 min (BeginTime) before it is eligible again: release it early,
    # but >1 s after the kill (slurmd compares credential times in whole seconds: "credential revoked")
    time.sleep(2)
    slurm_cluster.run("scontrol", "update", f"JobId={jid}", "StartTime=now")
    job = slurm_cluster.wait_job(jid, timeout=60)
    log = out.read_text()
    assert job["Restarts"] == "1" and job["ExitCode"] == "0:0", f"{job}\n{log}"
    assert "REQUEUE_PROBE checkpoint" in log and "REQUEUE_PROBE resumed" in log, log


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "megajepa" / "train.py").exists(), reason="needs megajepa/train.py")
def test_tiny_training_run_under_slurm(slurm_cluster, tmp_path):
    run = tmp_path / "run"
    jid, out = _submit(slurm_cluster, tmp_path, "pretrain_8node.sh", f"OUTPUT_DIR={run}",
                       "model.preset=tiny", "train.max_steps=10", DS_CONFIG=os.environ.get("MEGAJEPA_TEST_DS_CONFIG", ""))
    job = slurm_cluster.wait_job(jid, timeout=300)
    log = out.read_text()
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (job, log[-4000:])
    assert "Traceback" not in log, log[-4000:]
    assert "launcher=slurm rank=0/2" in log, log[-4000:]  # rank 1 logs warnings only
    assert (run / "checkpoints" / "latest").exists(), sorted(p.name for p in run.rglob("*"))
    assert list((run / "tensorboard").rglob("events.out.tfevents.*")), sorted(str(p) for p in run.rglob("*"))
    # the conversion script on the checkpoint just written (one task, no srun)
    hf = tmp_path / "hf"
    jid, out = _submit(slurm_cluster, tmp_path, "convert_to_hf.sh", f"CKPT={run / 'checkpoints' / 'latest'}",
                       f"OUT={hf}", tasks=1)
    job = slurm_cluster.wait_job(jid, timeout=120)
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (job, out.read_text()[-4000:])
    assert (hf / "config.json").exists(), sorted(p.name for p in hf.rglob("*"))
