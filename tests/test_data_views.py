"""`data.views` (issue 16, item 2): JEPA views from named record fields, apart from the NTP stream.

The paper's HellaSwag files are messages records with two extra fields, `text` (a user turn: the context)
and `code` (an assistant turn: the ending); the reference trains NTP on `messages` and JEPA between
`text` and `code`. Neither view is then a prefix of the stream, so both get copies: checked against
separate forward passes written from the definition, loss and gradients included."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import SPECIALS as SP
from helpers import CharTokenizer, random_views, tiny_model
from test_objective_layouts import (assert_pairs_equal_separate, enc_sequence, pred_sequence, separate_hidden,
                                    streams)

from megajepa.config import ConfigError, JepaConfig, load_config
from megajepa.data.collate import collate
from megajepa.data.examples import BadRecordReport, tokenize_records
from megajepa.data.packing import IGNORE, LayoutConfig, build_unit, place
from megajepa.data.records import view_specs
from megajepa.objective.hybrid import HybridObjective

HELLASWAG_VIEWS = [{"field": "text", "role": "user"}, {"field": "code", "role": "assistant"}]


def hellaswag_record(context: str, ending: str) -> dict:
    """The shape of the paper's HellaSwag lines (built here: tests never read ../shared)."""
    return {"messages": [{"role": "system", "content": "Pick the ending."},
                         {"role": "user", "content": f"{context} Which ending?"},
                         {"role": "assistant", "content": ending}],
            "text": [{"role": "user", "content": context}],
            "code": [{"role": "assistant", "content": ending}]}


def examples(seed: int, n: int = 4, n_jepa: int = 2):
    rng = np.random.default_rng(seed)
    return [(random_views(rng, 2), random_views(rng, n_jepa)) for _ in range(n)]


def packed(exs, layout):
    units = [build_unit(stream, SP, layout, jepa_views=jepa) for stream, jepa in exs]
    rows = place(units, sum(u.n_tokens for u in units) + 5, SP)
    assert len(rows) == 1
    return collate(rows)


@pytest.mark.parametrize("fields", [dict(predictors=1), dict(predictors=3, embed_at="last"), dict(predictors=0)])
def test_views_from_fields_equal_separate_passes(fields):
    layout, exs = LayoutConfig(**fields), examples(seed=len(str(fields)))
    model = tiny_model(seed=5)
    batch = packed(exs, layout)
    # the pairs are those of the JEPA views alone, as if each were its own example (dense and block masks)
    assert_pairs_equal_separate(model, batch, [(jepa, None) for _, jepa in exs], layout)
    # NTP only on the stream's answer; the JEPA views are copies (nothing shared with the stream)
    assert batch["labels"].ne(IGNORE).sum() == sum(len(t) - a for s, _ in exs for t, a in streams(s, layout, None))
    n_tokens = sum(len(t) for s, _ in exs for t, _ in streams(s, layout, None)) + sum(
        len(enc_sequence(j, 0, layout)) + layout.predictors + len(enc_sequence(j, 1, layout)) if layout.predictors
        else len(enc_sequence(j, 0, layout)) + len(enc_sequence(j, 1, layout)) for _, j in exs)
    assert int((batch["seg"] >= 0).sum()) == n_tokens


def test_loss_and_gradients_equal_unpacked():
    layout, exs = LayoutConfig(predictors=2), examples(seed=11)
    jepa = JepaConfig.paper(lam=0.7, gamma=1.3, predictors=2)
    packed_model, reference = tiny_model(seed=6), tiny_model(seed=6)
    one = torch.tensor(1.0)
    loss, _ = HybridObjective(packed_model, jepa)(packed(exs, layout), one, one)
    ntp, d = 0.0, 0.0
    for stream, jepa_views in exs:
        for tokens, answer in streams(stream, layout, None):
            h = separate_hidden(reference, tokens)
            ntp = ntp + F.cross_entropy(reference.lm_head(h[answer - 1:-1]), torch.tensor(tokens[answer:]),
                                        reduction="sum")
        pred = separate_hidden(reference, pred_sequence(jepa_views, 0, layout))[-1]
        target = separate_hidden(reference, enc_sequence(jepa_views, 1, layout))[-1]
        d = d + 1 - F.cosine_similarity(pred, target, dim=0)
    expected = jepa.gamma * ntp + jepa.lam * d
    loss.backward()
    expected.backward()
    assert abs(loss.item() - expected.item()) < 1e-4 * max(1.0, abs(expected.item()))
    for (name, p), q in zip(packed_model.named_parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=2e-5, rtol=1e-4), name


def test_records_give_the_named_fields_and_bad_ones_name_the_reason():
    good = hellaswag_record("A man ties his shoe", "then he runs off.")
    missing, no_turn = dict(good), dict(good, code=[{"role": "user", "content": "x"}])
    del missing["text"]
    report = BadRecordReport()
    out = tokenize_records([("f.jsonl:1", good), ("f.jsonl:2", missing), ("f.jsonl:3", no_turn)],
                           CharTokenizer(50, 20), "skip", report, view_specs=view_specs(HELLASWAG_VIEWS))
    tok = CharTokenizer(50, 20)
    assert len(out) == 1
    assert out[0].views == [tok.encode("A man ties his shoe Which ending?"), tok.encode("then he runs off.")]
    assert out[0].jepa_views == [tok.encode("A man ties his shoe"), tok.encode("then he runs off.")]
    assert report.counts == {"field 'text' (data.views) is missing": 1,
                             "field 'code' has no assistant turn (data.views)": 1}
    assert report.first[0].startswith("f.jsonl:2: ")


@pytest.mark.parametrize("views,message", [
    ("[{field: text}]", "at least 2"), ("[{field: text, role: bot}, {field: code}]", "data.views[0].role"),
    ("[{field: text, side: 1}, {field: code}]", "data.views[0].side"), ("[text, code]", "data.views[0]")])
def test_bad_view_specs_are_config_errors(views, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [f"data.views={views}"])


def hellaswag_file(path, n=200):
    rng = np.random.default_rng(0)
    words = ["dog", "cat", "runs", "jumps", "then", "over", "the", "fence", "slowly", "away"]
    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps(hellaswag_record(" ".join(rng.choice(words, 6)), " ".join(rng.choice(words, 4)))) + "\n")
    return [json.loads(line) for line in open(path)]


def run_config(root):
    return load_config(None, [f"output_dir={root}/run", f"data.sources=[{root}/train.jsonl]",
                              "data.views=[{field: text, role: user}, {field: code, role: assistant}]",
                              "data.vocab_size=384", "data.seq_len=128", "model.dim=64", "model.n_layers=1",
                              "model.ffn_dim=128", "train.max_steps=4", "train.warmup_steps=1", "train.log_interval=1",
                              "jepa.dropout=0"])  # every example's pair packed


def test_the_training_data_path_packs_stream_plus_text_and_code_copies(tmp_path):
    """build_data on a HellaSwag-shaped file: every example is its messages stream, `bos text sep pred`
    and `bos code eos`, token for token (counted from the tokenizer here)."""
    from megajepa.training.build import build_data
    records = hellaswag_file(tmp_path / "train.jsonl")
    tokenizer, epochs = build_data(run_config(tmp_path), None, 0)
    enc = tokenizer.encode
    want = sum((1 + len(enc(r["messages"][1]["content"])) + 1 + len(enc(r["messages"][2]["content"])) + 1)
               + (1 + len(enc(r["text"][0]["content"])) + 1) + 1 + (1 + len(enc(r["code"][0]["content"])) + 1)
               for r in records)
    rows = epochs.rows(0)
    assert sum(r.n_real for r in rows) == want
    assert sum(len(r.pairs) for r in rows) == len(records)


@pytest.mark.slow
def test_a_hellaswag_shaped_file_trains(tmp_path):
    """The real Trainer in one gloo process: the run finishes with finite JEPA losses logged."""
    from helpers import run_gloo_ranks
    hellaswag_file(tmp_path / "train.jsonl")
    run_gloo_ranks(_train, 1, str(tmp_path))
    with open(tmp_path / "run" / "losses.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert len(lines) == 4 and all(np.isfinite(r["jepa"]) and r["jepa"] > 0 for r in lines)


def _train(rank, root):
    import os
    os.environ.update(OMP_NUM_THREADS="1", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
    from megajepa import distributed
    from megajepa.training.trainer import train
    train(run_config(root), distributed.init_distributed())
