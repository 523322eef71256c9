"""`tools/evaluate.py generate` and the in-training evaluation, on a tiny checkpoint trained here by the real
entry point (one process, ZeRO-3 engine). ~70 s, most of it the training run."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from test_generation import recompute_greedy

from megajepa.data.corpus import synthetic_split
from megajepa.eval.generate import main as generate_main
from megajepa.eval.load import load_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["model.dim=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.ffn_dim=128",
        "data.seq_len=128", "data.vocab_size=400", "data.num_train=300", "train.lr=5e-3", "train.warmup_steps=1"]
STEPS, MAX_NEW = 12, 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalrun")
    _, test = synthetic_split("regex", 300, 12, 99)
    test_file = tmp / "test.jsonl"
    test_file.write_text("".join(json.dumps(r) + "\n" for r in test))
    run = tmp / "run"
    cmd = [sys.executable, os.path.join(REPO, "megajepa", "train.py"), f"output_dir={run}",
           f"train.max_steps={STEPS}", "train.save_interval=100", "train.log_interval=6", "eval.interval=6",
           f"eval.file={test_file}", "eval.metric=exact,prefix,regex", f"eval.max_new_tokens={MAX_NEW}", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, run, test_file, test


def read_jsonl(path):
    return [json.loads(line) for line in open(path)]


@pytest.mark.slow
def test_periodic_eval_logs_scores_and_predictions(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, run, _, test = trained
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for metric in ("exact", "prefix", "regex"):
        assert [e.step for e in events.Scalars(f"eval/{metric}")] == [6, 12]
    rows = read_jsonl(run / "eval" / f"step_{STEPS:08d}.jsonl")
    assert [r["reference"] for r in rows] == [r["views"][1] for r in test]
    assert [r["text"] for r in rows] == [r["views"][0] for r in test]


@pytest.mark.slow
def test_cli_matches_training_eval_and_recompute(trained):
    tmp, run, test_file, test = trained
    out, metrics = tmp / "preds.jsonl", tmp / "metrics.json"
    assert generate_main(["--model", str(run), "--input", str(test_file), "--output", str(out), "--json",
                          str(metrics), "--metric", "exact,prefix", "--max-new-tokens", str(MAX_NEW),
                          "--batch-size", "5"]) == 0
    rows = read_jsonl(out)
    # the live ZeRO-3 engine's predictions at the last step == the checkpoint reloaded through zero_to_fp32
    in_training = read_jsonl(run / "eval" / f"step_{STEPS:08d}.jsonl")
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in in_training]
    assert any(r["prediction"] for r in rows)  # trained enough to emit tokens, so the comparison bites
    # and == a no-cache full-recompute greedy loop over `bos Text sep`
    loaded = load_model(str(run))
    tok = loaded.tokenizer
    for row, record in zip(rows, test):
        prompt = [tok.bos_id] + tok.encode(record["views"][0]) + [tok.sep_id]
        assert row["prediction"] == tok.decode(recompute_greedy(loaded.model, prompt, MAX_NEW, tok.eos_id))
    report = json.load(open(metrics))
    assert report["n"] == len(test)
    assert report["metrics"]["exact"]["correct"] == sum(r["prediction"] == r["reference"] for r in rows)
    assert report["metrics"]["prefix"]["correct"] == sum(r["prediction"].startswith(r["reference"]) for r in rows)


def test_cli_on_converted_hf_dir(trained):
    import transformers

    from megajepa.interop.adapter import to_hf_config, to_hf_state_dict
    tmp, run, test_file, _ = trained
    loaded = load_model(str(run))
    cfg = loaded.model.config
    hf_dir = tmp / "hf"
    hf = transformers.LlamaForCausalLM(to_hf_config(cfg))
    hf.load_state_dict(to_hf_state_dict(loaded.model.state_dict(), cfg.tie_embeddings), strict=False)
    hf.save_pretrained(hf_dir)
    shutil.copy(loaded.tokenizer.path, hf_dir / "tokenizer.model")
    args = ["--input", str(test_file), "--max-new-tokens", str(MAX_NEW), "--metric", "exact"]
    assert generate_main(["--model", str(hf_dir), "--output", str(tmp / "hf.jsonl"), "--json",
                          str(tmp / "hf.json"), *args]) == 0
    assert generate_main(["--model", str(run), "--output", str(tmp / "ds.jsonl"), "--json",
                          str(tmp / "ds.json"), *args]) == 0
    assert read_jsonl(tmp / "hf.jsonl") == read_jsonl(tmp / "ds.jsonl")


def test_bad_input_named_before_loading(trained, capsys):
    tmp, run, _, _ = trained
    bad = tmp / "bad.jsonl"
    bad.write_text(json.dumps({"views": ["a", "b"]}) + "\n" + "{not json\n")
    common = ["--model", str(run), "--output", str(tmp / "x.jsonl"), "--json", str(tmp / "x.json")]
    assert generate_main([*common, "--input", str(bad)]) == 2
    assert f"{bad}:2: invalid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"views": ["only text"]}) + "\n")
    assert generate_main([*common, "--input", str(bad)]) == 2
    assert f"{bad}:1: needs a Text and a Code view" in capsys.readouterr().err
    assert generate_main([*common, "--input", str(bad), "--metric", "exact,bleu"]) == 2
    assert "bleu" in capsys.readouterr().err
    assert not (tmp / "x.json").exists()


def test_moved_run_dir_finds_its_tokenizer(trained):
    tmp, run, _, _ = trained
    moved = tmp / "moved"
    shutil.copytree(run, moved)
    os.rename(run / "tokenizer", tmp / "tokenizer_elsewhere")  # the recorded path no longer exists
    try:
        loaded = load_model(str(moved / "checkpoints" / f"step_{STEPS:08d}"))
        assert loaded.tokenizer.path.startswith(str(moved))
        assert torch.equal(loaded.model.embed_tokens.weight, load_model(str(moved)).model.embed_tokens.weight)
    finally:
        os.rename(tmp / "tokenizer_elsewhere", run / "tokenizer")


def test_analyze_embeddings_cli_writes_json_and_plots(trained, capsys):
    from megajepa.cli.analyze import main as analyze_main
    tmp, run, small_test, _ = trained
    _, records = synthetic_split("regex", 300, 90, 7)
    data = tmp / "analysis_input.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp / "analysis"
    assert analyze_main(["--model", str(run), "--input", str(data), "--out", str(out)]) == 0
    result = json.load(open(out / "analysis.json"))
    assert (result["n"], result["dim"], result["predictors"], result["embed_at"]) == (90, 64, 1, "end")
    assert len(result["svd_text_minus_code"]) == 64
    assert result["text_to_code"]["lstsq_error"] > 0 and 0 < result["effective_rank"]["enc_code"] <= 64
    for name in ("spectrum.png", "projection.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    args = ["--model", str(run), "--input", str(data), "--out", str(tmp / "a80"), "--max-examples", "80"]
    assert analyze_main(args) == 0
    assert json.load(open(tmp / "a80" / "analysis.json"))["n"] == 80  # fewer rows than given: said so
    assert f"used the first 80 of {len(records)} records" in capsys.readouterr().out
    # 12 examples cannot determine a 64-wide linear map: a clear error, not a meaningless zero
    assert analyze_main(["--model", str(run), "--input", str(small_test), "--out", str(tmp / "a2")]) == 2
    assert "more examples (12) than embedding width (64)" in capsys.readouterr().err


@pytest.mark.slow
def test_two_rank_zero3_eval_and_checkpoint(tmp_path):
    """2 ranks under the deepspeed launcher: the in-training evaluation shards the set and stops decoding
    together; the 2-shard ZeRO-3 checkpoint reloads to a model that predicts exactly what the ranks did."""
    from run_helpers import env, free_port
    _, test = synthetic_split("regex", 300, 7, 5)  # 7 items: the ranks get 4 and 3 (+1 filler)
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps(r) + "\n" for r in test))
    run = tmp_path / "run"
    cmd = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "2", "--master_port",
           str(free_port()), os.path.join(REPO, "megajepa", "train.py"), f"output_dir={run}", "train.max_steps=8",
           "train.save_interval=100", "train.log_interval=8", "eval.interval=8", f"eval.file={test_file}",
           "eval.metric=exact", f"eval.max_new_tokens={MAX_NEW}", "train.micro_batch_size=2", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env(), cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len([f for f in os.listdir(run / "checkpoints" / "step_00000008") if "optim_states" in f]) == 2
    in_training = read_jsonl(run / "eval" / "step_00000008.jsonl")
    assert [r["reference"] for r in in_training] == [r["views"][1] for r in test]
    out = tmp_path / "preds.jsonl"
    assert generate_main(["--model", str(run), "--input", str(test_file), "--output", str(out), "--json",
                          str(tmp_path / "m.json"), "--max-new-tokens", str(MAX_NEW)]) == 0
    assert [r["prediction"] for r in read_jsonl(out)] == [r["prediction"] for r in in_training]


@pytest.mark.parametrize("override,message", [("eval.metric=exact,bleu", "config key 'eval.metric': unknown"),
                                              ("eval.file=/nonexistent.jsonl", "eval.file: /nonexistent.jsonl")])
@pytest.mark.slow
def test_bad_eval_config_fails_before_training(tmp_path, override, message):
    cmd = [sys.executable, os.path.join(REPO, "megajepa", "train.py"), f"output_dir={tmp_path}", "eval.interval=5",
           override, "train.max_steps=2", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert not os.path.isdir(tmp_path / "checkpoints")


def test_default_eval_set_is_the_synthetic_test_split_with_its_databases(tmp_path):
    """No eval.file: the synthetic task's held-out records; sql databases written where scoring finds them."""
    from megajepa.config import load_config
    from megajepa.eval.generate import prediction_rows, score_rows
    from megajepa.eval.periodic import eval_items
    cfg = load_config(None, [f"output_dir={tmp_path}", "data.task=sql", "data.num_train=200", "data.num_test=20",
                             "eval.max_examples=6"])
    items, base = eval_items(cfg)
    _, test = synthetic_split("sql", 200, 20, cfg.seed)
    assert [(i.text, i.reference, i.db_path) for i in items] == [(*r["views"][:2], r["db_path"]) for r in test[:6]]
    gold = score_rows(prediction_rows(items, [i.reference for i in items]), ["sql"], base)["sql"]
    assert (gold["correct"], gold["gold_error"]) == (6, 0)
    wrong = score_rows(prediction_rows(items, ["SELECT 1"] * 6), ["sql"], base)["sql"]
    assert wrong["correct"] == 0


@pytest.mark.parametrize("with_system", [False, True])
def test_prompt_is_the_packed_stream_prefix_before_code(with_system):
    """The generation prompt is exactly what the trainer's stream holds before Code (chat prompt or not)."""
    from helpers import SPECIALS as SP
    from test_embeddings import IdTokenizer

    from megajepa.data.packing import LayoutConfig, build_unit
    from megajepa.eval.generate import items_from_records, prompt_ids
    record = {"messages": [{"role": "system", "content": "40 41"}, {"role": "user", "content": "20 21 22"},
                           {"role": "assistant", "content": "30 31"}]}
    item = items_from_records([record])[0]
    tok = IdTokenizer()
    views = [tok.encode(item.text), tok.encode(item.reference)]
    stream = build_unit(views, SP, LayoutConfig(), prompt=tok.encode(item.system) if with_system else None)
    tokens = stream.segments[0].tokens
    prompt = prompt_ids(tok, item, with_system)
    assert tokens[:len(prompt)] == prompt and tokens[len(prompt):] == views[1] + [SP.eos]
