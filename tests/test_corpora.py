"""Real-corpus failures (issue 16): every failure names file:line and reason before compute, nothing is
silently dropped, and both the in-memory path (training/build.build_data) and tools/preprocess_data.py
agree. Files are built here, shaped like the LLM-JEPA paper's messages records. CPU only, in-process."""
import json
import logging
import os
import stat
import sys

import pytest

from megajepa.config import load_config
from megajepa.data.examples import RecordError
from megajepa.data.sources import read_jsonl
from megajepa.training.build import build_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import preprocess_data


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
