"""The hybrid objective as one module, so DeepSpeed's engine wraps model and loss together and ZeRO-3
gathers the output head inside the forward that uses it."""
from __future__ import annotations

import torch
from torch import nn

from megajepa.config import JepaConfig, StpConfig
from megajepa.model.attention import build_attention_mask
from megajepa.model.transformer import Transformer
from megajepa.objective.losses import jepa_terms, ntp_loss
from megajepa.objective.regularizers import regularizer, sigreg_directions
from megajepa.objective.schedules import TermWeights, term_weights
from megajepa.objective.stp import stp_term as stp_gather_cosine


def regularized(jepa: JepaConfig) -> bool:
    return jepa.regularizer != "none" and jepa.reg_weight > 0


def stp_on(stp: StpConfig | None) -> bool:
    return stp is not None and stp.lam > 0


def total_loss(jepa: JepaConfig, weights: TermWeights, lm, jepa_term, reg=0.0, stp_term=0.0):
    """THE total: gamma * NTP + lambda * JEPA + reg_weight * R + stp.lambda * STP, each term a mean (tensors
    in the step, floats in the logs), at the weights in force (term_weights). A term at weight 0 is left
    out, so a non-finite value there cannot reach the loss."""
    total = jepa.gamma * lm
    if weights.lam > 0:
        total = total + weights.lam * jepa_term
    if regularized(jepa) and weights.reg > 0:
        total = total + weights.reg * reg
    return total + weights.stp * stp_term if weights.stp > 0 else total  # STP: objective/stp.py


class HybridObjective(nn.Module):
    def __init__(self, model: Transformer, jepa: JepaConfig, use_flex: bool = False, gather_targets=None,
                 compile_losses: bool = False, seed: int = 0, reduce=None, stp: StpConfig | None = None):
        """`gather_targets`: InfoNCE negatives from every data-parallel rank (losses.gather_across_ranks);
        `compile_losses`: the JEPA gather + distance as one compiled function, SIGReg's local sums and its
        statistic as two more (the all-reduce between them eager), STP's gather + cosine (train.compile);
        `seed`: the run seed (SIGReg directions); `reduce`: the regularizer's sum over data-parallel ranks
        (regularizers.autograd_all_reduce), None on one rank; `stp`: the STP term's config (stp.lambda 0 or
        None: off; batches then carry the samples of data/stp.py)."""
        super().__init__()
        self.model = model
        self.jepa = jepa
        self.use_flex = use_flex
        self.gather_targets = gather_targets
        self.compile_losses = compile_losses
        self.seed = seed
        self.reduce = reduce
        self.stp = stp

    def forward(self, batch: dict[str, torch.Tensor], ntp_denominator: torch.Tensor,
                jepa_denominator: torch.Tensor, step: int = 0, micro_step: int = 0,
                stp_denominator: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss for one micro-batch (`micro_step` of the step's accumulation), already normalised by the
        step's global counts (`stp_denominator`: the step's global STP weight sum).

        Returns (loss, stats) with stats holding detached sums for logging: ntp_sum, jepa_sum, cos_sum,
        the regularizer's value (global over ranks), the Pred/target embeddings for collapse monitoring and,
        with STP on, stp_sum and the sampled displacements stp_vectors [S, 2, D]."""
        mask = build_attention_mask(batch["seg"], batch["ctx_seg"], batch["ctx_end"], self.use_flex,
                                    self.model.config.sliding_window)
        hidden = self.model(batch["input_ids"], batch["position_ids"], mask)
        flat = hidden.reshape(-1, hidden.shape[-1])
        if "ntp_idx" in batch:  # the head only where a label is (collate.add_ntp_index)
            ntp_sum = self.model.lm_head(flat.index_select(0, batch["ntp_idx"]), ntp_loss(batch["ntp_labels"]))
        else:
            ntp_sum = self.model.lm_head(flat, ntp_loss(batch["labels"]))
        jepa_sum, cos_sum, pred, target = jepa_terms(
            flat, batch["pred_idx"], batch["tgt_idx"], batch["pair_mask"],
            self.jepa.distance, self.jepa.temperature, self.gather_targets, self.compile_losses)
        reg = self._regularizer(pred, target, batch["pair_mask"], step) if regularized(self.jepa) \
            else torch.zeros((), device=flat.device)
        stats = {"ntp_sum": ntp_sum.detach(), "jepa_sum": jepa_sum.detach(), "cos_sum": cos_sum,
                 "reg": reg.detach(), "pred": pred.detach(), "target": target.detach()}
        stp_mean = torch.zeros((), device=flat.device)
        if stp_on(self.stp):
            stp_sum, vectors = stp_gather_cosine(flat, batch["stp_idx"], batch["stp_weight"], self.compile_losses)
            stp_mean = stp_sum / stp_denominator
            stats.update(stp_sum=stp_sum.detach(), stp_vectors=vectors.detach())
        loss = total_loss(self.jepa, term_weights(self.jepa, step, self.seed, micro_step, self.stp),
                          ntp_sum / ntp_denominator, jepa_sum / jepa_denominator, reg, stp_mean)
        return loss, stats

    def _regularizer(self, pred, target, pair_mask, step):
        j = self.jepa
        z = {"both": lambda: torch.cat([pred, target]), "target": lambda: target, "pred": lambda: pred}[j.reg_on]()
        mask = torch.cat([pair_mask, pair_mask]) if j.reg_on == "both" else pair_mask
        directions = sigreg_directions(z.shape[1], j.sigreg_directions, self.seed, step) \
            if j.regularizer == "sigreg" else None
        return regularizer(j.regularizer, z, mask, directions, j.sigreg_knots, j.sigreg_t_max, self.reduce,
                           self.compile_losses)[0]
