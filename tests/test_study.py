"""benchmarks/study_v2.py and its statistics: the paired tests against scipy, the wrong-number
diagnostic, the nested data fractions, the steps that make "equal examples" against the real loader, the
lock that splits a study across processes, and (slow) the whole runner at toy size: E1 (every run trained,
evaluated and summarized, NTP at a JEPA arm's FLOPs, finished runs reused), E2 (pretrain, convert,
fine-tune, label accuracy) and E3 (one NTP base, fine-tuned per arm)."""
import importlib
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = ["model.dim=64", "model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=2", "model.ffn_dim=128",
       "data.vocab_size=384", "train.warmup_steps=2", "train.micro_batch_size=4", "data.seq_len=128"]


@pytest.fixture
def study(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))  # the scripts import their siblings
    return importlib.import_module("study_v2"), importlib.import_module("study_stats"), importlib.import_module("study_runs")


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    from megajepa.data.synthetic import split
    d = tmp_path_factory.mktemp("toy")
    train, test = split("regex", 320, 100, 0)
    for name, records in (("train", train), ("test", test)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(d / "train.jsonl"), str(d / "test.jsonl")


def test_paired_tests_equal_scipy(study):
    from scipy import stats
    _, s, _ = study
    arm, base = [61.0, 63.5, 58.0, 64.0, 62.5], [60.0, 61.0, 59.5, 60.5, 60.0]
    diffs = [a - b for a, b in zip(arm, base)]
    ours = s.paired_t_greater(diffs)
    ref = stats.ttest_rel(arm, base, alternative="greater")
    assert ours["t"] == pytest.approx(ref.statistic, rel=1e-12) and ours["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert s.paired_t_greater([1.0, 1.0])["p"] == 0.0 and s.paired_t_greater([2.0])["p"] is None
    # exact McNemar = a two-sided binomial test on the discordant pairs
    a = [True] * 30 + [False] * 12 + [True] * 50
    b = [False] * 30 + [True] * 12 + [True] * 50
    only_a, only_b, p = s.mcnemar_p(a, b)
    assert (only_a, only_b) == (30, 12) and p == pytest.approx(stats.binomtest(12, 42, 0.5).pvalue, rel=1e-9)
    # every sign agreeing: only the all-positive and all-negative flips are as extreme
    assert s.sign_flip_p([1.0, 2.0, 0.5, 3.0, 1.5]) == pytest.approx(2 / 2 ** 5)


def test_wrong_number_only_counts_misses_that_masking_the_digits_would_pass(study, tmp_path):
    m, _, _ = study
    rows = [("a{3,}", "a{3,}"),        # right: not counted
            ("a{6,}", "a{3,}"),        # only the number is wrong: counted
            ("b{12}x", "b{34}"),       # a longer number, and a prefix match once masked: counted
            ("b{3,}", "a{3,}"),        # wrong structure: not counted
            ("a{3}", "a{3,}")]         # masking does not make it start with the reference: not counted
    (tmp_path / "predictions.jsonl").write_text(
        "".join(json.dumps({"prediction": p, "reference": r}) + "\n" for p, r in rows))
    assert m.wrong_number_only(str(tmp_path)) == 2


def test_fractions_are_nested_and_sized(study, toy_files, tmp_path):
    v2, _, _ = study
    args = v2.parse_args(["--out", str(tmp_path), "--train", toy_files[0]])
    with open(toy_files[0]) as f:
        everything = f.readlines()
    previous = set()
    for fraction, size in (("1/16", 20), ("1/8", 40), ("1/4", 80), ("1/2", 160), ("1", 320)):
        with open(v2.fraction_file(args, fraction)) as f:
            lines = f.readlines()
        assert len(lines) == size and previous <= set(lines) and set(lines) <= set(everything)
        previous = set(lines)


def test_equal_examples_steps_are_the_loaders_epochs(study, toy_files, tmp_path):
    """steps_for_epochs = the optimizer steps the trainer's loader takes to finish --epochs epochs
    (counted by running the loader itself), for an arm whose loss dropout repacks every epoch."""
    v2, _, runs = study
    from megajepa.config import load_config
    from megajepa.data.loader import DistributedRowLoader
    from megajepa.training.build import build_data
    args = v2.parse_args(["--out", str(tmp_path), "--train", toy_files[0], "--epochs", "3", *TOY, "train.grad_accum=2"])
    assert v2.epochs_of(args, "1/4") == 12 and v2.epochs_of(args, "1") == 3  # the same examples at every fraction
    arms = v2.read_arms()
    run = v2.Run("e1", "jepa_sigreg", 7, "1/4")
    overrides = v2.run_overrides(args, arms, run, v2.tokenizer_file(args))
    steps = runs.steps_for_epochs(v2.BASE_CONFIG, overrides, 3)
    cfg = load_config(v2.BASE_CONFIG, overrides)
    _, rows = build_data(cfg, None, 0)
    assert list(rows.keeps_views(0)) != list(rows.keeps_views(1))  # dropout 0.75: each epoch packs anew
    loader = DistributedRowLoader(rows, cfg.train.micro_batch_size, 0, 1, cfg.train.grad_accum)
    taken = 0
    while True:
        loader.next_batch()  # a step's first micro-batch: the loader moves on to the next epoch when needed
        if loader.epoch == 3:
            break
        for _ in range(cfg.train.grad_accum - 1):
            loader.next_batch()
        taken += 1
    assert steps == taken


def test_a_live_lock_is_respected_and_a_dead_one_taken_over(study, tmp_path):
    _, _, runs = study
    import socket
    run_dir = str(tmp_path / "run")
    assert runs.claim(run_dir) and not runs.claim(run_dir)  # held by this (live) process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(os.path.join(run_dir, "study.lock"), "w") as f:
        f.write(f"{socket.gethostname()} {int(dead.stdout)}")
    assert runs.claim(run_dir)


@pytest.mark.slow
def test_the_runner_trains_evaluates_and_summarizes_at_toy_size(toy_files, tmp_path):
    out, summary = tmp_path / "study", tmp_path / "study.json"
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "study_v2.py"), "--out", str(out), "--json", str(summary),
           "--train", toy_files[0], "--test", toy_files[1], "--fractions", "1/2", "--seeds", "1-2", "--epochs", "1",
           "--experiments", "e1", "--arms", "ntp,jepa_sigreg", "--compute-arms", "jepa_sigreg", "--analysis-examples", "70",
           "--wait", "1", *TOY]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = json.loads(summary.read_text())
    assert s["finished_runs"] == s["planned_runs"] == 6
    runs = {(r["label"], r["seed"]): r for r in s["runs"]}
    for seed in (1, 2):
        ntp, jepa, eq = (runs[(label, seed)] for label in ("ntp", "jepa_sigreg", "ntp_at_jepa_sigreg_flops"))
        assert eq["trained_steps"] == round(jepa["flops"] / (ntp["flops"] / ntp["trained_steps"]))
        assert abs(eq["flops"] - jepa["flops"]) <= ntp["flops"] / ntp["trained_steps"]  # within one NTP step
        assert all(0 <= ntp["metrics"][m] <= 100 for m in ("prefix", "exact", "regex"))
        assert jepa["collapse_over_training"]["collapse/erank_enc"] and jepa["code"]["commit"]
    tests = {(t["arm"], t["budget"]): t for t in s["tests"]}
    assert set(tests) == {("jepa_sigreg", "examples"), ("jepa_sigreg", "compute")}
    assert tests[("jepa_sigreg", "examples")]["seeds"] == [1, 2]
    # the per-seed differences are the runs' own accuracies
    diffs = tests[("jepa_sigreg", "examples")]["prefix"]["seed_diffs"]
    assert diffs == [runs[("jepa_sigreg", k)]["metrics"]["prefix"] - runs[("ntp", k)]["metrics"]["prefix"] for k in (1, 2)]
    # a rerun reuses every finished run: nothing is trained again
    logs = sorted(out.rglob("train.log"))
    before = [x.stat().st_mtime_ns for x in logs]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0 and [x.stat().st_mtime_ns for x in logs] == before
    assert "6 of 6 planned runs finished" in p.stdout


@pytest.mark.slow
def test_e2_pretrains_converts_fine_tunes_and_scores_labels(tmp_path):
    """E2 at toy size: paraphrase pretraining per arm, conversion to transformers, NTP fine-tuning on a
    review -> Good/Bad file, label accuracy; the fine-tuned run starts from the pretrained weights."""
    rng = __import__("random").Random(0)
    words = {"Good": ["great", "lovely", "superb", "fine"], "Bad": ["awful", "dull", "poor", "weak"]}

    def review(i):
        label = "Good" if i % 2 else "Bad"
        return {"messages": [{"role": "system", "content": "Determine whether the comment is positive or negative"},
                             {"role": "user", "content": f"a {rng.choice(words[label])} film number {i}"},
                             {"role": "assistant", "content": label}]}
    train, test = tmp_path / "rt_train.jsonl", tmp_path / "rt_test.jsonl"
    train.write_text("".join(json.dumps(review(i)) + "\n" for i in range(200)))
    test.write_text("".join(json.dumps(review(i)) + "\n" for i in range(200, 240)))
    out, summary = tmp_path / "study", tmp_path / "study.json"
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "study_v2.py"), "--out", str(out), "--json", str(summary),
           "--experiments", "e2", "--e2-arms", "ntp,jepa_sigreg", "--seeds", "1", "--rt-train", str(train),
           "--rt-test", str(test), "--paraphrase-groups", "80", "--pretrain-epochs", "1", "--finetune-epochs", "2",
           "--finetune-set", "train.warmup_steps=1", "--wait", "1", *TOY, "data.seq_len=256"]  # 5 views, each a stream and a copy: over 128 tokens
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = json.loads(summary.read_text())
    assert s["finished_runs"] == 2 and [t["arm"] for t in s["tests"]] == ["jepa_sigreg"]
    assert (s["e2_paraphrase_groups"], s["e2_pretrain_epochs"], s["e2_finetune_epochs"]) == (80, 1, 2)  # as asked
    by_arm = {g["label"]: g for g in s["groups"]}  # the arm's name, not overwritten by the label metric
    assert sorted(by_arm) == ["jepa_sigreg", "ntp"]
    for r in s["runs"]:
        assert by_arm[r["arm"]]["label_accuracy"]["per_seed"] == [r["metrics"]["label"]]
        assert 0 <= r["metrics"]["label"] <= 100 and r["finetune_steps"] > 0 and r["trained_steps"] > 0
        seed_dir = out / r["dir"]
        assert (seed_dir / "hf" / "config.json").is_file()
        assert f"model.init_from_hf={seed_dir / 'hf'}" in r["finetune_overrides"]
        log = (seed_dir / "finetune" / "train.log").read_text()
        assert "train.max_steps" in " ".join(json.loads((seed_dir / "finetune" / "study_run.json").read_text())["command"])
        assert "Traceback" not in log
    groups = (out / "e2" / "data" / "paraphrase_train.jsonl").read_text().splitlines()
    assert len(groups) == 80 and all(len(json.loads(g)["views"]) == 5 for g in groups)


@pytest.mark.slow
def test_e3_pretrains_one_base_and_fine_tunes_it_per_arm(toy_files, tmp_path):
    """E3 at toy size: one NTP base model on a mixture (here SQL and arithmetic records, no regex), converted
    to transformers, then fine-tuned on half of the regex train file per arm and scored as E1; every
    fine-tuning run starts from that one base, and the base is not a group of the summary."""
    from megajepa.data.synthetic import split
    mixture = []
    for task in ("sql", "arithmetic"):
        path = tmp_path / f"{task}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in split(task, 120, 0, 1)[0]))
        mixture.append(str(path))
    out, summary = tmp_path / "study", tmp_path / "study.json"
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "study_v2.py"), "--out", str(out), "--json", str(summary),
           "--train", toy_files[0], "--test", toy_files[1], "--experiments", "e3", "--e3-arms", "ntp,jepa_sigreg",
           "--e3-mixture", ",".join(mixture), "--e3-fractions", "1/2", "--e3-base-epochs", "1", "--e3-epochs", "1",
           "--e3-finetune-set", "train.warmup_steps=1", "--seeds", "1", "--analysis-examples", "70", "--wait", "1", *TOY,
           "data.seq_len=256"]  # with the toy vocabulary over half the mixture records need more than 128 tokens
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    s = json.loads(summary.read_text())
    assert s["finished_runs"] == s["planned_runs"] == 2 and [t["arm"] for t in s["tests"]] == ["jepa_sigreg"]
    assert {g["label"] for g in s["groups"]} == {"ntp", "jepa_sigreg"} and s["e3_base"]["trained_steps"] > 0
    base_hf = out / "e3" / "base" / "hf"
    assert (base_hf / "config.json").is_file()
    assert f"data.sources=[{', '.join(mixture)}]" in s["e3_base"]["overrides"]
    for r in s["runs"]:
        assert r["dir"].startswith("e3/frac_1_2/") and f"model.init_from_hf={base_hf}" in r["overrides"]
        assert all(0 <= r["metrics"][m] <= 100 for m in ("prefix", "exact", "regex")) and r["trained_steps"] > 0
        assert "Traceback" not in (out / r["dir"] / "train.log").read_text()


def test_carry_keeps_an_earlier_summarys_points_that_have_no_run_here(study, tmp_path):
    """--carry: a (experiment, fraction) point with no finished run here comes whole from the earlier
    summary, marked; a point measured here is never mixed with the earlier one's runs."""
    study_v2 = study[0]

    def group(fraction, label, seeds):
        return {"experiment": "e1", "fraction": fraction, "label": label, "seeds": seeds}

    def run(fraction, label, seed):
        return {"dir": f"e1/frac_{fraction.replace('/', '_')}/{label}/seed{seed}", "label": label}

    earlier = {"command": "python benchmarks/study_v2.py --old",
               "groups": [group("1/16", "ntp", [1, 2]), group("1/4", "ntp", [1, 2, 3]),
                          dict(group("1/4", "stp", [1, 2, 3]), carried_from="python benchmarks/study_v2.py --older")],
               "tests": [{"experiment": "e1", "fraction": f, "arm": "stp", "budget": "examples"} for f in ("1/16", "1/4")],
               "runs": [run("1/16", "ntp", 1), run("1/16", "ntp", 2), run("1/4", "ntp", 1), run("1/4", "stp", 2)]}
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    summary = {"groups": [group("1/16", "ntp", [1, 2, 3, 4, 5])], "tests": [], "runs": [run("1/16", "ntp", 3)],
               "finished_runs": 5, "planned_runs": 5}
    study_v2.carry_over(summary, str(path))
    assert [(g["fraction"], g["label"], "carried_from" in g) for g in summary["groups"]] == [
        ("1/16", "ntp", False), ("1/4", "ntp", True), ("1/4", "stp", True)]
    assert [t["fraction"] for t in summary["tests"]] == ["1/4"]
    assert [r["dir"] for r in summary["runs"]] == ["e1/frac_1_16/ntp/seed3", "e1/frac_1_4/ntp/seed1", "e1/frac_1_4/stp/seed2"]
    assert summary["finished_runs"] == summary["planned_runs"] == 5 + 6
    # carried twice, a group keeps the summary that measured it
    assert [g.get("carried_from") for g in summary["groups"][1:]] == ["python benchmarks/study_v2.py --old",
                                                                     "python benchmarks/study_v2.py --older"]
