"""benchmarks/jepa_overhead.py at toy size: it runs, writes the documented keys, and its reference
schemes compute the same objective as the packed hybrid (sums equal to float rounding). ~40 s."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_benchmark_runs_and_references_match_the_packed_objective(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "jepa_overhead.py"), "--examples", "12",
           "--ref-examples", "8", "--paraphrase-examples", "6", "--dim", "32", "--layers", "1", "--max-length", "128",
           "--seq-len", "128", "--vocab-size", "400", "--repeats", "1", "--packed-repeats", "1", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    for key in ("token_ratio", "time_ratio", "sigreg_time_ratio", "stp_time_ratio", "speedup_vs_ref_a", "speedup_vs_ref_b",
                "speedup_vs_ref_b_dynamic"):
        assert data[key] > 0, key
    assert set(data["runs"]) == {"ntp_packed", "hybrid_packed", "ref_a", "ref_b", "ref_b_dynamic"}
    diffs = {k: v for k, v in data.items() if "_rel_diff_" in k}
    assert len(diffs) == 6 and all(v < 1e-5 for v in diffs.values()), diffs
    # padding to max_length: scheme A feeds 3 x 128 positions per example, B 2 x 128
    assert data["runs"]["ref_a"]["tokens_per_example"] == 3 * 128
    assert data["runs"]["ref_b"]["tokens_per_example"] == 2 * 128
    assert data["runs"]["hybrid_packed"]["real_tokens"] > data["runs"]["ntp_packed"]["real_tokens"]
    assert "| hybrid_packed |" in result.stdout
