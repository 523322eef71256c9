"""The real trainer preempted under a real (one-node, local) Slurm: `scancel --signal=USR1 --batch`
(what `#SBATCH --signal=B:USR1@120` sends before the time limit) -> slurm/common.sh forwards USR1 to
the srun step -> both ranks stop after the same step, save, exit 75 -> the job requeues itself and
resumes with resume=auto -> the per-step losses equal the uninterrupted run's bit for bit."""
import os
import re
import time

import pytest
from run_helpers import RUN, STEPS, free_port, losses, reference_losses, same_losses, wait_for_step
from test_slurm import _submit

pytestmark = pytest.mark.slurm


class _Job:  # wait_for_step's view of a Slurm job: running while not finished
    def __init__(self, cluster, jid):
        self.cluster, self.jid, self.returncode = cluster, jid, None

    def poll(self):
        state = self.cluster.job(self.jid).get("JobState")
        return None if state in ("PENDING", "RUNNING", "CONFIGURING", "REQUEUED", None) else state


@pytest.mark.slow
def test_usr1_under_slurm_checkpoints_requeues_and_resumes_exactly(slurm_cluster, tmp_path_factory):
    want = reference_losses(str(tmp_path_factory.getbasetemp()))
    tmp = tmp_path_factory.mktemp("slurm_preempt")
    out = str(tmp / "run")
    jid, log_path = _submit(slurm_cluster, tmp, "pretrain_8node.sh", f"OUTPUT_DIR={out}", *RUN,
                            "train.save_interval=100",  # the signal's save only
                            MASTER_PORT=str(free_port()))  # not 10000+job id: other test clusters reuse job 1
    wait_for_step(_Job(slurm_cluster, jid), out, 1, timeout=240)
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", str(jid))
    end = time.monotonic() + 120
    while (job := slurm_cluster.job(jid)).get("Restarts", "0") == "0" or job["JobState"] != "PENDING":
        assert job["JobState"] not in ("COMPLETED", "FAILED", "CANCELLED"), (job, log_path.read_text()[-3000:])
        assert time.monotonic() < end, (job, log_path.read_text()[-3000:])
        time.sleep(0.3)
    time.sleep(2)  # Slurm holds a requeued job ~2 min; release it (>1 s after the kill, see test_slurm)
    slurm_cluster.run("scontrol", "update", f"JobId={jid}", "StartTime=now")
    job = slurm_cluster.wait_job(jid, timeout=300)
    log = log_path.read_text()
    assert job["JobState"] == "COMPLETED" and job["Restarts"] == "1" and job["ExitCode"] == "0:0", (job, log[-3000:])
    stops = re.findall(r"\[(rank\d)\] WARNING stopped after step (\d+) on SIGUSR1", log)
    assert sorted(r for r, _ in stops) == ["rank0", "rank1"] and len({s for _, s in stops}) == 1, log[-3000:]
    k = int(stops[0][1])
    assert 1 <= k < STEPS
    # the first rank out makes srun (--kill-on-bad-exit) SIGTERM the other, which ignores it and exits 75 too
    assert "step exited rc=75 after USR1" in log, log[-3000:]
    assert f"resumed from {os.path.join(out, 'checkpoints', f'step_{k:08d}')} at step {k}" in log, log[-3000:]
    got = losses(out)
    assert sorted(got) == list(range(1, STEPS + 1))
    same_losses(got, want, range(1, STEPS + 1))
