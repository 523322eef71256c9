"""The corpus a run builds before training is frozen out of Python's cyclic collector (training/build.py,
`cyclic_gc_paused`; docs/benchmarks.md, start-up): it lives for the whole run, so no later collection
rescans it. CPU only, in-process."""
import gc
import json

import pytest

from megajepa.config import load_config
from megajepa.training.build import build_data


@pytest.fixture
def corpus_cfg(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": f"document number {i}"}) + "\n" for i in range(8)))
    yield load_config(None, [f"output_dir={tmp_path}/run", f"data.sources=[{path}]", "data.vocab_size=300",
                             "data.seq_len=64"])
    gc.unfreeze()


def tracked_by_the_collector(obj) -> bool:
    return any(o is obj for o in gc.get_objects())  # every generation but the permanent (frozen) one


@pytest.mark.parametrize("enabled_before", [True, False])
def test_built_corpus_is_frozen_and_the_collector_left_as_it_was(corpus_cfg, enabled_before):
    gc.unfreeze()
    (gc.enable if enabled_before else gc.disable)()
    try:
        _, epochs = build_data(corpus_cfg, None, 0)
        assert gc.isenabled() == enabled_before
    finally:
        gc.enable()
    assert epochs.units and not any(map(tracked_by_the_collector, (epochs, epochs.examples, epochs.units)))
