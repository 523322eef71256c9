"""tools/preprocess_data.py shards: rows equal what the in-memory packer makes of the same examples,
batches equal collate.collate, the output does not depend on the worker count, and a mismatched
manifest is refused. ~25 s (a 2-worker pool, a tiny sentencepiece model)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from megajepa.config import load_config
from megajepa.data import corpus
from megajepa.data.collate import collate
from megajepa.data.examples import BadRecordReport, RecordError, tokenize_records
from megajepa.data.loader import make_unit
from megajepa.data.packing import LayoutConfig, Specials, place
from megajepa.data.permutation import FeistelShuffle
from megajepa.data.preprocess import open_checked, preprocess
from megajepa.data.shards import ShardRows
from megajepa.data.stp import StpSampling, add_stp_samples
from megajepa.data.tokenizer import load_tokenizer
from megajepa.data.tokenizer.sentencepiece import train_tokenizer
from helpers import direct_keeps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_CHUNK = 128  # several chunks from a small corpus
FIELDS = ("input_ids", "labels", "position_ids", "seg", "ctx_seg", "ctx_end", "pairs")


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """A mixture: two-view regex records, 3-view paraphrase-like records, plain documents, chat records
    with a system turn, and a few broken lines."""
    from megajepa.data.synthetic import generate
    d = tmp_path_factory.mktemp("corpus")
    regex = generate("regex", 300, 0)
    with open(d / "pairs.jsonl", "w") as f:
        for i, r in enumerate(regex):
            f.write(json.dumps({"views": r["views"]}) + "\n")
            if i % 50 == 7:
                f.write('{"views": ["broken\n' if i % 100 == 7 else '{"views": []}\n')
    with open(d / "docs.jsonl", "w") as f:
        for i, r in enumerate(regex[:200]):
            f.write(json.dumps({"text": " ".join(r["views"]) * (1 + i % 3)}) + "\n")
            f.write(json.dumps({"messages": [{"role": "system", "content": "Convert."},
                                             {"role": "user", "content": r["views"][0]},
                                             {"role": "assistant", "content": r["views"][1]}]}) + "\n")
            f.write(json.dumps({"views": [r["views"][0], r["views"][0].upper(), r["views"][1]]}) + "\n")
    tok = train_tokenizer([v for r in regex for v in r["views"]], d / "tok.model", 400, seed=0)
    return d, tok.path


def run_config(d, tok, *extra):
    return load_config(None, [f"data.tokenizer={tok}", "data.seq_len=128", "jepa.dropout=0.25", "seed=7",
                              f"data.sources=[{{path: {d}/pairs.jsonl, weight: 2}}, {{path: {d}/docs.jsonl, weight: 1}}]",
                              *extra])


def reference_rows(cfg, tok_path):
    """The in-memory path over the same stream, chunk by chunk as documented: tokenize_records, loss
    dropout U(seed, epoch 0, record) >= p (helpers.direct_keeps), the fit check, first-fit
    place() within the chunk."""
    tok = load_tokenizer(tok_path)
    report = BadRecordReport()
    records = list(corpus.record_stream(cfg))
    sp, layout = Specials.from_tokenizer(tok), LayoutConfig.from_run(cfg)
    rows, skipped = [], 0
    for index, start in enumerate(range(0, len(records), SMALL_CHUNK)):
        examples = tokenize_records(records[start:start + SMALL_CHUNK], tok, "skip", report,
                                    with_prompt=cfg.data.system_prompt, extra_fields=cfg.data.extra_view_fields,
                                    first_record=start)
        keep = [direct_keeps(cfg.seed, 0, e.record, cfg.jepa.example_dropout) for e in examples]
        units = [make_unit(e, sp, layout, bool(k)) for e, k in zip(examples, keep)]
        fitting = [u for u in units if u.n_tokens <= cfg.data.seq_len]
        skipped += len(units) - len(fitting)
        rows += place(fitting, cfg.data.seq_len, sp)
    return rows, report.total + skipped


def as_dict(row):
    return {f: list(map(tuple, row.pairs)) if f == "pairs" else list(getattr(row, f)) for f in FIELDS}


@pytest.mark.parametrize("extra", [[], ["data.system_prompt=true", "jepa.predictors=2", "data.train_all=true"],
                                   ["data.system_prompt=true", "data.label_prompt=true"],
                                   ["data.train_all=true", "data.train_all_views=first", "jepa.embed_at=last"]])
def test_shards_equal_the_in_memory_packing(corpus_dir, tmp_path, extra):
    d, tok = corpus_dir
    cfg = run_config(d, tok, *extra)
    manifest = preprocess(cfg, str(tmp_path / "shards"), workers=1, rows_per_shard=16, progress=False,
                          chunk_records=SMALL_CHUNK)
    want, skipped = reference_rows(cfg, tok)
    rows = ShardRows(str(tmp_path / "shards"), cfg.seed)
    assert rows.total == len(want) == manifest["counts"]["rows"] > 16  # several shards
    assert [as_dict(rows.row(i)) for i in range(rows.total)] == [as_dict(r) for r in want]
    assert manifest["dtypes"]["input_ids"] == "uint16" and manifest["dtypes"]["seg"] == "int16"
    first = manifest["shards"][0]
    assert os.path.getsize(tmp_path / "shards" / "shard_00000.input_ids.bin") == first["rows"] * 128 * 2
    c = manifest["counts"]
    assert c["records_read"] > 3 * SMALL_CHUNK
    assert c["records_skipped"] == skipped and c["skipped_by_reason"]["record has no views"] == 3
    assert c["skipped_by_reason"]["does not fit one row (data.seq_len)"] == skipped - 6 > 0
    assert 0 < c["jepa_examples"] < c["examples"]  # dropout and plain documents carry no JEPA views
    assert c["tokens"] == sum(r.n_real for r in want)
    # A batch read from the memory maps equals collate.collate over the epoch's permuted rows.
    order = FeistelShuffle(len(want), [cfg.seed, 3]).take(np.arange(len(want)))
    assert sorted(order.tolist()) == list(range(len(want)))  # every row once per epoch
    got, ref = rows.batch(3, 5, 4), collate([want[i] for i in order[5:9]])
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key].dtype == ref[key].dtype and got[key].equal(ref[key]), key
    # STP samples come from the rows' documents and their place in the epoch, as for rows packed in memory
    stp = StpSampling("random_span", 2, "none", cfg.seed)
    got = ShardRows(str(tmp_path / "shards"), cfg.seed, stp).batch(3, 5, 4)
    ref = add_stp_samples(ref, [want[i].docs for i in order[5:9]], 3, 5, stp)
    assert int((got["stp_weight"] > 0).sum()) > 0
    for key in ("stp_idx", "stp_weight", "stp_skipped"):
        assert got[key].equal(ref[key]), key


def test_worker_count_does_not_change_the_shards(corpus_dir, tmp_path):
    d, tok = corpus_dir
    cfg = run_config(d, tok)
    one = preprocess(cfg, str(tmp_path / "one"), workers=1, rows_per_shard=16, progress=False, chunk_records=100)
    two = preprocess(cfg, str(tmp_path / "two"), workers=2, rows_per_shard=16, progress=False, chunk_records=100)
    assert one["shards"] == two["shards"]
    for shard in one["shards"]:
        for f in ("input_ids", "labels", "position_ids", "seg", "ctx_seg", "ctx_end", "pairs", "pair_offsets",
                  "docs", "doc_offsets"):
            name = f"{shard['name']}.{f}.bin"
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_mismatched_manifest_is_refused(corpus_dir, tmp_path):
    d, tok = corpus_dir
    out = str(tmp_path / "shards")
    preprocess(run_config(d, tok), out, workers=1, progress=False)
    open_checked(run_config(d, tok, f"data.shards={out}"), load_tokenizer(tok))  # the same config opens
    with pytest.raises(RecordError, match=r"were written skipping \d+ bad record\(s\); first: .*pairs.jsonl:9: bad JSON"):
        open_checked(run_config(d, tok, f"data.shards={out}", "data.on_bad_record=error"), load_tokenizer(tok))
    with pytest.raises(RecordError, match=r"do not match this run \(seq_len: shards 128 vs this run 256\)"):
        open_checked(run_config(d, tok, f"data.shards={out}", "data.seq_len=256"), load_tokenizer(tok))
    # shards packed before data.label_prompt existed (no key in the manifest) were packed without it
    path = os.path.join(out, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    del manifest["packing"]["label_prompt"]
    with open(path, "w") as f:
        json.dump(manifest, f)
    open_checked(run_config(d, tok, f"data.shards={out}"), load_tokenizer(tok))
    with pytest.raises(RecordError, match=r"label_prompt: shards False vs this run True"):
        open_checked(run_config(d, tok, f"data.shards={out}", "data.label_prompt=true"), load_tokenizer(tok))
    other = train_tokenizer(["something else entirely"] * 50, tmp_path / "other.model", 300, seed=0)
    with pytest.raises(RecordError, match="tokenizer sha256"):
        open_checked(run_config(d, tok, f"data.shards={out}"), other)
    with open(os.path.join(out, "shard_00000.labels.bin"), "r+b") as f:
        f.truncate(100)
    with pytest.raises(RecordError, match="shard_00000.labels.bin: 100 bytes, the manifest says"):
        ShardRows(out, 0)


@pytest.mark.slow
def test_cli_summary_and_error_policy(corpus_dir, tmp_path):
    d, tok = corpus_dir
    args = [sys.executable, os.path.join(REPO, "tools", "preprocess_data.py"), "--out", str(tmp_path / "s"),
            "--workers", "2", f"data.tokenizer={tok}", f"data.sources=[{d}/pairs.jsonl]", "data.seq_len=512"]
    ok = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "records read 306, skipped 6" in ok.stdout and "tokens/s with 2 worker(s)" in ok.stdout
    assert f"{d}/pairs.jsonl:9: bad JSON" in ok.stdout
    bad = subprocess.run(args + ["data.on_bad_record=error"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and f"{d}/pairs.jsonl:9: bad JSON" in bad.stderr
    assert not os.path.exists(tmp_path / "s" / "manifest.json")  # no half-written set left looking valid


def test_a_transformers_tokenizer_is_stored_and_checked(corpus_dir, tmp_path):
    from interop_fixtures import hf_tokenizer
    d, _ = corpus_dir
    hf_tokenizer(vocab_size=320).save_pretrained(str(tmp_path / "hf"))
    cfg = run_config(d, str(tmp_path / "hf"))
    out = str(tmp_path / "shards")
    preprocess(cfg, out, workers=2, rows_per_shard=16, progress=False, chunk_records=SMALL_CHUNK)
    want, _ = reference_rows(cfg, os.path.join(out, "tokenizer_hf"))  # the copy has sep/predictors added
    # A run naming the original directory (tokens added on load) matches the stored copy.
    rows = open_checked(run_config(d, str(tmp_path / "hf"), f"data.shards={out}"), load_tokenizer(str(tmp_path / "hf")))
    assert [as_dict(rows.row(i)) for i in range(rows.total)] == [as_dict(r) for r in want]
    hf_tokenizer(vocab_size=330).save_pretrained(str(tmp_path / "other"))
    with pytest.raises(RecordError, match="tokenizer sha256"):
        open_checked(run_config(d, str(tmp_path / "other"), f"data.shards={out}"), load_tokenizer(str(tmp_path / "other")))


def test_on_disk_types_follow_the_ranges():
    from megajepa.data.shards import _cast, field_dtypes
    assert field_dtypes(32000, 4096) == {"position_ids": "int16", "seg": "int16", "ctx_seg": "int16", "ctx_end": "int16",
                                         "pairs": "int16", "docs": "int16", "input_ids": "uint16", "labels": "int16"}
    big = field_dtypes(128256, 65536)
    assert big["input_ids"] == big["labels"] == big["seg"] == "int32"
    with pytest.raises(ValueError, match="do not fit uint16"):
        _cast(np.array([70000]), "uint16", "x")
