"""Two Slurm nodes in two network namespaces joined by veth pairs on a bridge: `sbatch --nodes=2` of the
real pretrain script, one rank per node, rendezvous over the link (tests/cluster/netns_cluster.py)."""
import os
import subprocess

import pytest
from test_slurm import ROOT, _env, _probes

pytestmark = pytest.mark.slurm
TWO_NODES = ["--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=0", "--cpus-per-task=1", "--time=10"]


@pytest.fixture(scope="module")
def two_node_cluster(tmp_path_factory):
    from cluster.netns_cluster import NetnsSlurmCluster
    from cluster.slurm_cluster import ClusterUnavailable

    try:
        cluster = NetnsSlurmCluster(str(tmp_path_factory.mktemp("slurm2"))).start()
    except (ClusterUnavailable, subprocess.SubprocessError, OSError) as e:
        pytest.skip(f"no two-node cluster in network namespaces: {e}")
    yield cluster
    cluster.stop()


def _submit(cluster, tmp_path, *args, **env):
    out = tmp_path / "job.out"
    jid = cluster.sbatch(*TWO_NODES, f"--output={out}", f"--error={out}", str(ROOT / "slurm" / "pretrain_8node.sh"),
                         *args, env=_env(**env), cwd=str(ROOT))
    return jid, out


@pytest.mark.slow
def test_one_rank_per_node_rendezvous_over_the_link(two_node_cluster, tmp_path):
    jid, out = _submit(two_node_cluster, tmp_path, f"OUTPUT_DIR={tmp_path / 'run'}",
                       TRAIN_SCRIPT="tests/probes/allreduce_probe.py")
    job = two_node_cluster.wait_job(jid, timeout=120)
    log = out.read_text()
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (job, log[-3000:])
    recs = _probes(log)
    assert [(r["rank"], r["local_rank"], r["host"]) for r in recs] == [(0, 0, "mjn1"), (1, 0, "mjn2")], recs
    assert all(r["world"] == 2 and r["launcher"] == "slurm" and r["sum"] == 1 and r["master"] == "mjn1"
               for r in recs), recs


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "megajepa" / "train.py").exists(), reason="needs megajepa/train.py")
def test_tiny_training_run_on_two_nodes(two_node_cluster, tmp_path):
    run = tmp_path / "run"
    jid, out = _submit(two_node_cluster, tmp_path, f"OUTPUT_DIR={run}", "model.preset=tiny", "train.max_steps=6", "train.warmup_steps=5",
                       "train.log_interval=3")
    job = two_node_cluster.wait_job(jid, timeout=400)
    log = out.read_text()
    assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", (job, log[-4000:])
    assert "launcher=slurm rank=0/2" in log and "master=mjn1" in log, log[-4000:]
    tag = run / "checkpoints" / "step_00000006"
    assert (tag / "COMPLETE").exists(), sorted(p.name for p in run.rglob("*"))
    assert len(list(tag.glob("zero_pp_rank_*_optim_states.pt"))) == 2  # one shard from each node's rank
    assert list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert os.path.getsize(run / "losses.jsonl") > 0
