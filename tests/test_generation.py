"""Batched KV-cache greedy decoding equals a no-cache full-recompute loop and transformers' generate."""
import numpy as np
import pytest
import torch
import transformers
from helpers import VOCAB, tiny_model

from megajepa.interop.adapter import to_hf_config, to_hf_state_dict
from megajepa.model.generation import greedy_generate

PAD = 0
SHARP = 0.3  # large weights: peaked attention, so a wrong mask or position changes the argmax


def recompute_greedy(model, prompt, max_new_tokens, eos_id, window=None):
    """Reference: one prompt at a time, the whole sequence re-run each step, a plain causal mask."""
    ids, out = list(prompt), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            i = torch.arange(len(ids))
            mask = i[None, :] <= i[:, None]
            if window is not None:
                mask &= i[:, None] - i[None, :] < window
            token = int(model.lm_head(model(torch.tensor([ids]), i[None], mask[None, None])[0, -1]).argmax())
            if token == eos_id:
                break
            out.append(token)
            ids.append(token)
    return out


def make_prompts(seed=0, n=5):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(16, VOCAB, size=int(rng.integers(1, 14)))] for _ in range(n)]


def eos_mid_sequence(reference_without_eos):
    """An eos id that one row emits at its third step, so early stopping is exercised."""
    return reference_without_eos[0][2]


@pytest.mark.parametrize("kv,window", [(2, None), (4, 5)])
def test_matches_full_recompute(kv, window):
    model = tiny_model(seed=3, n_kv_heads=kv, sliding_window=window, init_std=SHARP).double()
    prompts = make_prompts()
    eos = eos_mid_sequence([recompute_greedy(model, p, 8, -1, window) for p in prompts])
    expected = [recompute_greedy(model, p, 8, eos, window) for p in prompts]
    assert any(len(e) < 8 for e in expected)  # some row stops at eos, others run to the limit
    assert greedy_generate(model, prompts, 8, eos, PAD) == expected
    assert greedy_generate(model, prompts, 8, eos, PAD, batch_size=2) == expected


def test_matches_transformers_generate():
    model = tiny_model(seed=5, tie_embeddings=False, init_std=SHARP).double()
    prompts = make_prompts(seed=1, n=4)
    eos = eos_mid_sequence([recompute_greedy(model, p, 10, -1) for p in prompts])
    hf = transformers.LlamaForCausalLM(to_hf_config(model.config, eos_id=eos, pad_id=PAD)).double().eval()
    hf.load_state_dict(to_hf_state_dict(model.state_dict(), False), strict=True)
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        generated = hf.generate(input_ids=ids, attention_mask=attention, max_new_tokens=10, do_sample=False,
                                eos_token_id=eos, pad_token_id=PAD)[:, width:].tolist()
    expected = [row[:row.index(eos)] if eos in row else row for row in generated]
    got = greedy_generate(model, prompts, 10, eos, PAD)
    assert got == expected
    assert any(len(g) < 10 for g in got)


def test_bad_arguments():
    model = tiny_model()
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        greedy_generate(model, [[5], []], 4, 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate(model, [[5]], 0, 3)
