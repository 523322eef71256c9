"""Each synthetic task's evaluator: gold Code views score 1, another record's Code view scores 0 (per
task, judged by the metric's own semantics: regex language, SQL result, final number); paraphrase
retrieval is 1 for embeddings that separate groups and near chance for random ones. ~5 s."""
import numpy as np
import pytest

from megajepa.data import synthetic
from megajepa.eval.synthetic import paraphrase_retrieval, score_task


@pytest.mark.parametrize("task", ["regex", "sql", "arithmetic"])
def test_gold_scores_one_and_shifted_predictions_score_low(task, tmp_path):
    records = synthetic.generate(task, 40, 3, out_dir=tmp_path)
    gold = score_task(task, records, [r["views"][1] for r in records], base_dir=str(tmp_path))
    assert gold["accuracy"] == 1.0 and gold["n"] == 40
    shifted = [records[(i + 1) % len(records)]["views"][1] for i in range(len(records))]
    wrong = score_task(task, records, shifted, base_dir=str(tmp_path))
    assert wrong["accuracy"] < 0.5
    assert score_task(task, records[:1], ["nonsense ((("], base_dir=str(tmp_path))["accuracy"] == 0.0


def test_paraphrase_has_no_generation_metric():
    with pytest.raises(ValueError, match="paraphrase_retrieval"):
        score_task("paraphrase", [], [])


def test_paraphrase_retrieval():
    rng = np.random.default_rng(0)
    records = synthetic.generate("paraphrase", 30, 1)
    centres = rng.normal(size=(len(records), 16))
    separated = [centres[g] + 0.05 * rng.normal(size=(len(r["views"]), 16)) for g, r in enumerate(records)]
    good = paraphrase_retrieval(separated)
    assert good["accuracy"] == 1.0 and good["n"] == sum(len(r["views"]) for r in records)
    noise = paraphrase_retrieval([rng.normal(size=(len(r["views"]), 16)) for r in records])
    assert noise["accuracy"] < 0.3 and 0 < noise["chance"] < 0.2
