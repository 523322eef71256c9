"""The hybrid objective as one module, so DeepSpeed's engine wraps model and loss together and ZeRO-3
gathers the output head inside the forward that uses it."""
from __future__ import annotations

import torch
from torch import nn

from megajepa.config import JepaConfig
from megajepa.model.attention import build_attention_mask
from megajepa.model.transformer import Transformer
from megajepa.objective.losses import jepa_terms, ntp_loss


def total_loss(jepa: JepaConfig, lm, jepa_term):
    """THE total: gamma * NTP + lambda * JEPA, each term a mean (tensors in the step, floats in the logs).
    At lambda = 0 the JEPA term is left out, so a non-finite value there cannot reach the loss."""
    total = jepa.gamma * lm
    return total + jepa.lam * jepa_term if jepa.lam > 0 else total


class HybridObjective(nn.Module):
    def __init__(self, model: Transformer, jepa: JepaConfig, use_flex: bool = False, gather_targets=None,
                 compile_losses: bool = False):
        """`gather_targets`: InfoNCE negatives from every data-parallel rank (losses.gather_across_ranks);
        `compile_losses`: the JEPA gather + distance as one compiled function (train.compile)."""
        super().__init__()
        self.model = model
        self.jepa = jepa
        self.use_flex = use_flex
        self.gather_targets = gather_targets
        self.compile_losses = compile_losses

    def forward(self, batch: dict[str, torch.Tensor], ntp_denominator: torch.Tensor,
                jepa_denominator: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss for one micro-batch, already normalised by the step's global counts.

        Returns (loss, stats) with stats holding detached sums for logging: ntp_sum, jepa_sum, cos_sum,
        and the Pred/target embeddings for collapse monitoring."""
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
        loss = total_loss(self.jepa, ntp_sum / ntp_denominator, jepa_sum / jepa_denominator)
        stats = {"ntp_sum": ntp_sum.detach(), "jepa_sum": jepa_sum.detach(), "cos_sum": cos_sum,
                 "pred": pred.detach(), "target": target.detach()}
        return loss, stats
