"""megajepa/train.py with faults injected from the environment (tests only):
  MEGAJEPA_FAULT_NAN_LOSS=RANK:S1,S2  that rank's loss (and its logged terms) is NaN at steps S1, S2 (1-based)
  MEGAJEPA_FAULT_NAN_GRAD=RANK:S1,S2  that rank's gradients are NaN at those steps; its logged loss stays finite
  MEGAJEPA_FAULT_KILL_IN_SAVE=RANK:S  that rank SIGKILLs itself in the middle of writing checkpoint S
"""
import os
import signal

from deepspeed.runtime.engine import DeepSpeedEngine

from megajepa import train
from megajepa.objective.hybrid import HybridObjective
from megajepa.training import trainer
from megajepa.training.checkpoint.locate import tag_for

RANK = int(os.environ.get("RANK", "0"))
_step = [0]


def _spec(name):
    rank, _, steps = os.environ.get(name, "-1:").partition(":")
    return {int(s) for s in steps.split(",") if s} if int(rank) == RANK else set()


nan_loss, nan_grad = _spec("MEGAJEPA_FAULT_NAN_LOSS"), _spec("MEGAJEPA_FAULT_NAN_GRAD")
kill_steps = _spec("MEGAJEPA_FAULT_KILL_IN_SAVE")
_train_step, _forward, _save_zero = trainer.Trainer.train_step, HybridObjective.forward, DeepSpeedEngine._save_zero_checkpoint


def train_step(self):
    _step[0] = self.step + 1
    return _train_step(self)


def forward(self, *args, **kwargs):
    loss, stats = _forward(self, *args, **kwargs)
    if _step[0] in nan_loss:
        stats = dict(stats, ntp_sum=stats["ntp_sum"] * float("nan"))
    if _step[0] in nan_loss | nan_grad:
        loss = loss * float("nan")  # NaN in the backward: every gradient it reaches
    return loss, stats


def save_zero(self, save_dir, tag, *args, **kwargs):
    if tag in {tag_for(s) for s in kill_steps}:  # model states written, optimizer shards not
        print(f"FAULT: rank {RANK} killing itself while writing {tag}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return _save_zero(self, save_dir, tag, *args, **kwargs)


trainer.Trainer.train_step, HybridObjective.forward, DeepSpeedEngine._save_zero_checkpoint = train_step, forward, save_zero
train.run_and_exit()
