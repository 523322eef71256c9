"""Real-corpus failures (issue 16): every failure names file:line and reason before compute, nothing is
silently dropped, and both the in-memory path (training/build.build_data) and tools/preprocess_data.py
agree. Files are built here, shaped like the LLM-JEPA paper's messages records. CPU only, in-process."""
import json
import logging
import os
import stat

import pytest

from megajepa.cli import preprocess as preprocess_data
from megajepa.config import load_config
from megajepa.data.examples import RecordError
from megajepa.data.sources import read_jsonl
from megajepa.training.build import build_data



def msg(role, content):
    return [{"role": role, "content": content}]


def paper_record(i):
    return {"messages": msg("user", f"context number {i}") + msg("assistant", f"ending {i} of the story"),
            "text": msg("user", f"context number {i}"), "code": msg("assistant", f"ending {i} of the story")}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def cfg_for(tmp_path, path, *overrides):
    return load_config(None, [f"output_dir={tmp_path}/run", f"data.sources=[{path}]", "data.vocab_size=300",
                              "data.seq_len=64", *overrides])


def preprocess_exit(tmp_path, path, *overrides):
    out = tmp_path / "shards"
    code = preprocess_data.main(["--out", str(out), "--workers", "1", "--no-progress", f"data.sources=[{path}]",
                                 "data.vocab_size=300", "data.seq_len=64", *overrides])
    return code, out


ALL_BAD = {
    "json_array": (lambda p: p.write_text(json.dumps([paper_record(0), paper_record(1)]) + "\n"),
                   "expected a JSON object, got list", ()),
    "empty": (lambda p: p.write_text(""), "no records", ()),
    "assistant_extra_view": (lambda p: write_jsonl(p, [paper_record(i) for i in range(5)]),
                             "needs a user turn", ("data.extra_view_fields=[code]",)),
}


@pytest.mark.parametrize("case", sorted(ALL_BAD))
@pytest.mark.parametrize("policy", ["skip", "error"])
def test_all_bad_records_are_named_before_the_tokenizer(tmp_path, case, policy, capsys):
    make, reason, extra = ALL_BAD[case]
    path = tmp_path / f"{case}.jsonl"
    make(path)
    overrides = (*extra, f"data.on_bad_record={policy}")
    with pytest.raises(RecordError) as e:
        build_data(cfg_for(tmp_path, path, *overrides), None, 0)
    assert reason in str(e.value) and "no training text" not in str(e.value)
    if case != "empty":
        assert f"{path}:1: " in str(e.value)
    assert not os.path.exists(tmp_path / "run" / "tokenizer" / "tokenizer.model")  # validated first
    code, out = preprocess_exit(tmp_path, path, *overrides)
    assert code == 2
    assert reason in capsys.readouterr().err
    assert not os.path.exists(out / "manifest.json")


def test_preprocess_refuses_a_zero_row_shard_set(tmp_path, capsys):
    long = [{"text": "word " * 200} for _ in range(4)]  # each longer than seq_len: skipped by the packer
    path = write_jsonl(tmp_path / "long.jsonl", long)
    code, out = preprocess_exit(tmp_path, path, "data.max_skip_fraction=1.0")
    assert code == 2
    assert "data.seq_len" in capsys.readouterr().err
    assert not os.path.exists(out / "manifest.json")


def test_skip_ceiling_stops_before_compute_and_names_the_fix(tmp_path, capsys):
    records = [{"text": "word " * 200}] * 3 + [{"text": f"short {i}"} for i in range(2)]  # 3 of 5 too long
    path = write_jsonl(tmp_path / "mixed.jsonl", records)
    with pytest.raises(RecordError, match=r"3 of 5 records.*data\.seq_len.*data\.max_skip_fraction"):
        build_data(cfg_for(tmp_path, path), None, 0)
    code, out = preprocess_exit(tmp_path, path)
    assert code == 2 and "data.max_skip_fraction" in capsys.readouterr().err
    assert not os.path.exists(out / "manifest.json")
    build_data(cfg_for(tmp_path, path, "data.max_skip_fraction=0.7"), None, 0)  # raised ceiling: runs


def test_data_summary_line(tmp_path, caplog):
    records = [{"text": f"document number {i}"} for i in range(6)] + ["not an object"]
    path = write_jsonl(tmp_path / "docs.jsonl", records)
    with caplog.at_level(logging.INFO, logger="megajepa"):
        build_data(cfg_for(tmp_path, path), None, 0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data summary:")]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    line = lines[0]
    assert "records read 7, kept 6, skipped 1" in line and "expected a JSON object, got str" in line
    assert f"{path} 7" in line and "tokenizer trained" in line
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="megajepa"):
        build_data(cfg_for(tmp_path, path), None, 0)  # the same output_dir: reused, and said from where
    assert any(f"tokenizer reused from {tmp_path}/run/tokenizer" in r.getMessage() for r in caplog.records)


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "first"}).encode() + b"\n" +
                     json.dumps({"text": "second"}).encode() + b"\n")
    assert [r for _, r in read_jsonl(str(path))] == [{"text": "first"}, {"text": "second"}]


def test_json_error_column_of_a_truncated_line(tmp_path):
    line = json.dumps({"text": "abc"})
    path = tmp_path / "cut.jsonl"
    path.write_text(line[:-3] + "\n")
    ((_, bad),) = list(read_jsonl(str(path)))
    try:
        json.loads(line[:-3])
    except json.JSONDecodeError as e:  # the reference: the json module's own column on the stripped line
        assert f"column {e.colno}" in bad.reason


def test_tokenizer_file_mode_follows_the_umask(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": f"document number {i}"} for i in range(6)])
    old = os.umask(0o022)
    try:
        build_data(cfg_for(tmp_path, path), None, 0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "run" / "tokenizer" / "tokenizer.model").st_mode) == 0o644


# ------------------------------------------------------------------ resume=PATH, checked before the model is built
def _checkpoint_like(tag_dir, world=1, complete=True):
    import torch
    tag_dir.mkdir(parents=True)
    for r in range(world):
        torch.save({"w": torch.ones(3)}, tag_dir / f"zero_pp_rank_{r}_mp_rank_00_model_states.pt")
        torch.save({"o": torch.ones(3)}, tag_dir / f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt")
    if complete:
        (tag_dir / "COMPLETE").write_text(json.dumps({"step": 1, "world_size": world}) + "\n")
    return tag_dir


def _resume_error(tmp_path, tag_dir):
    from megajepa.config import ConfigError
    from megajepa.training.build import resume_target
    cfg = load_config(None, [f"output_dir={tmp_path}/run", f"resume={tag_dir}"])
    with pytest.raises(ConfigError) as e:
        resume_target(cfg)
    return str(e.value)


def test_resume_path_not_a_checkpoint(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    message = _resume_error(tmp_path, tmp_path / "notes")
    assert "is not a checkpoint" in message and "interrupted" not in message


def test_resume_path_incomplete(tmp_path):
    message = _resume_error(tmp_path, _checkpoint_like(tmp_path / "step_00000001", complete=False))
    assert "incomplete" in message and "COMPLETE" in message


def test_resume_path_corrupt(tmp_path):
    import torch
    tag_dir = _checkpoint_like(tmp_path / "step_00000001", world=2)
    shard = tag_dir / "zero_pp_rank_1_mp_rank_00_model_states.pt"
    shard.write_bytes(shard.read_bytes()[:40])  # truncated: torch cannot read it (the reference)
    with pytest.raises(RuntimeError):
        torch.load(shard, weights_only=True)
    message = _resume_error(tmp_path, tag_dir)
    assert "corrupt" in message and shard.name in message
    (tag_dir / "zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    assert "corrupt" in _resume_error(tmp_path, tag_dir)  # a rank's files missing: 2 ranks wrote it


def test_resume_path_complete_is_accepted(tmp_path):
    from megajepa.training.build import resume_target
    tag_dir = _checkpoint_like(tmp_path / "step_00000001")
    cfg = load_config(None, [f"output_dir={tmp_path}/run", f"resume={tag_dir}"])
    assert resume_target(cfg) == (str(tmp_path), "step_00000001")


# ------------------------------------------------------------------ a cached tokenizer is never silently reused
def test_training_retrains_a_tokenizer_of_another_corpus(tmp_path, caplog):
    from megajepa.data.tokenizer.sentencepiece import train_tokenizer
    first = write_jsonl(tmp_path / "a.jsonl", [{"text": f"apples and pears {i}"} for i in range(8)])
    second_records = [{"text": f"quantum zebra xylophone {i}"} for i in range(8)]
    second = write_jsonl(tmp_path / "b.jsonl", second_records)
    build_data(cfg_for(tmp_path, first), None, 0)
    with caplog.at_level(logging.INFO):
        tokenizer, _ = build_data(cfg_for(tmp_path, second), None, 0)  # same output_dir, other corpus
    assert any("trained on another corpus" in r.getMessage() for r in caplog.records)
    assert any("tokenizer trained now" in r.getMessage() for r in caplog.records)
    reference = train_tokenizer([r["text"] for r in second_records], tmp_path / "ref" / "tokenizer.model", 300)
    assert tokenizer.sha256() == reference.sha256()  # as if trained on the second corpus alone


def test_preprocess_retrains_a_tokenizer_of_another_corpus(tmp_path):
    from megajepa.data.tokenizer.sentencepiece import train_tokenizer
    first = write_jsonl(tmp_path / "a.jsonl", [{"text": f"apples and pears {i}"} for i in range(8)])
    second_records = [{"text": f"quantum zebra xylophone {i}"} for i in range(8)]
    second = write_jsonl(tmp_path / "b.jsonl", second_records)
    assert preprocess_exit(tmp_path, first)[0] == 0
    code, out = preprocess_exit(tmp_path, second)  # the same --out
    assert code == 0
    reference = train_tokenizer([r["text"] for r in second_records], tmp_path / "ref" / "tokenizer.model", 300)
    assert json.loads((out / "manifest.json").read_text())["tokenizer"]["sha256"] == reference.sha256()


def test_deepspeed_config_that_is_a_json_list(tmp_path):
    from megajepa.config import ConfigError
    from megajepa.training.engine import resolve_ds_config
    path = tmp_path / "ds.json"
    path.write_text(json.dumps([{"train_micro_batch_size_per_gpu": 4}]))
    cfg = load_config(None, [f"output_dir={tmp_path}/run", f"deepspeed_config={path}"])
    with pytest.raises(ConfigError, match=f"{path} must be a JSON object, got a list"):
        resolve_ds_config(cfg, 1)


def test_one_view_records_are_ntp_documents_in_both_paths(tmp_path):
    """docs/data.md: a one-view record of any format is a plain NTP document, also in a JEPA run; and both
    paths drop the JEPA term of the same records (loss dropout's one rule: epoch 0 is what shards pack)."""
    records = [{"views": [f"one view number {i}"]} for i in range(6)] + [{"views": [f"q {i}", f"a {i}"]}
                                                                        for i in range(20)]
    path = write_jsonl(tmp_path / "one_view.jsonl", records)
    half = "jepa.dropout=0.5"
    _, epochs = build_data(cfg_for(tmp_path, path, "data.on_bad_record=error", half), None, 0)
    assert len(epochs.examples) == len(records)
    tokenizer = f"data.tokenizer={tmp_path}/run/tokenizer/tokenizer.model"
    code, out = preprocess_exit(tmp_path, path, "data.on_bad_record=error", tokenizer, half)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert code == 0 and counts["examples"] == len(records) and counts["records_skipped"] == 0
    assert counts["tokens"] == sum(r.n_real for r in epochs.rows(0))  # the same documents, the same tokens
    assert 0 < counts["jepa_examples"] == sum(len(r.pairs) for r in epochs.rows(0)) < 20
