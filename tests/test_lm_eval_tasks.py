"""megajepa_tasks/ under lm-evaluation-harness on a tiny converted model: its per-example generations
and exact-match score equal `tools/evaluate.py generate` on the same model and file (two independent
implementations of prompt, greedy decoding and scoring agreeing)."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

import interop_fixtures as fx

TASKS = os.path.join(fx.ROOT, "megajepa_tasks")


def test_task_yamls_read_local_json_lines():
    import yaml

    class Loader(yaml.SafeLoader):
        pass
    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    for path in glob.glob(os.path.join(TASKS, "*.yaml")):
        task = yaml.load(open(path), Loader=Loader)  # noqa: SIM115
        assert task["dataset_path"] == "json" and "test" in task["dataset_kwargs"]["data_files"], path
        assert task["output_type"] == "generate_until" and task["generation_kwargs"]["do_sample"] is False


@pytest.mark.slow
def test_lm_eval_exact_match_equals_evaluate_generate(tmp_path):
    pytest.importorskip("lm_eval")
    run_dir, hf = tmp_path / "run", tmp_path / "hf"
    # trained a little: past emitting eos first and one string for every prompt (the initial model's empty answers would agree vacuously),
    # far from right, so half the references below can be made its own answers and half stay wrong
    fx.run(["megajepa/train.py", f"output_dir={run_dir}", *fx.TINY_RUN, "train.max_steps=80", "train.lr=3e-3"])
    fx.run(["tools/convert_to_hf.py", "--checkpoint", str(run_dir), "--output", str(hf)])
    from megajepa.data.corpus import synthetic_split
    _, test = synthetic_split("regex", 300, 8, 0)
    records = [r[1] if isinstance(r, tuple) else r for r in test[:8]]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    preds = tmp_path / "preds.jsonl"
    fx.run(["tools/evaluate.py", "generate", "--model", str(hf), "--input", str(data), "--output", str(preds),
            "--json", str(tmp_path / "first.json"), "--metric", "exact", "--max-new-tokens", "16"])
    first = [json.loads(line)["prediction"] for line in preds.read_text().splitlines()]
    for r, p in zip(records[::2], first[::2]):  # half the references become the model's own answer
        r["views"][1] = p
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    fx.run(["tools/evaluate.py", "generate", "--model", str(hf), "--input", str(data), "--output", str(preds),
            "--json", str(tmp_path / "m.json"), "--metric", "exact", "--max-new-tokens", "16"])
    ours = json.loads((tmp_path / "m.json").read_text())
    ours = ours["metrics"]["exact"]
    tasks = tmp_path / "tasks"
    shutil.copytree(TASKS, tasks)
    yaml_text = (tasks / "nlrx.yaml").read_text().replace("data/nlrx/test.jsonl", str(data))
    (tasks / "nlrx.yaml").write_text(yaml_text.replace("max_gen_toks: 64", "max_gen_toks: 16"))
    lm_eval = os.path.join(os.path.dirname(sys.executable), "lm_eval")
    p = subprocess.run([lm_eval, "--model", "hf", "--model_args", f"pretrained={hf},dtype=float32",
                        "--apply_chat_template", "--include_path", str(tasks), "--tasks", "megajepa_nlrx",
                        "--device", "cpu", "--batch_size", "4", "--log_samples", "--output_path", str(tmp_path / "lm")],
                       cwd=fx.ROOT, env=dict(fx.env(), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1"),
                       capture_output=True, text=True, timeout=900, check=False)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    samples = sorted((json.loads(line) for f in glob.glob(str(tmp_path / "lm" / "*" / "samples_*.jsonl"))
                      for line in open(f)), key=lambda s: s["doc_id"])  # noqa: SIM115
    theirs = [s["filtered_resps"][0] for s in samples]
    wanted = [json.loads(line)["prediction"] for line in preds.read_text().splitlines()]
    assert [t.strip() for t in theirs] == [w.strip() for w in wanted]
    assert len({w.strip() for w in wanted}) > 1  # not a vacuous agreement on one string (or on empty answers)
    lm_exact = sum(s["exact"] for s in samples) / len(samples)
    assert lm_exact == ours["accuracy"] and 0 < lm_exact < 1, (lm_exact, ours)
