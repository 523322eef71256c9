"""training/checkpoint/locate: the one checkpoint locator of resume, evaluation and export. Unit tests on
hand-made tag folders, the import rule, and (slow) a moved continued-pretraining run that both converts
and evaluates."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers import fake_tag, tiny_config
from interop_fixtures import ROOT, hf_model, hf_tokenizer, run, save_hf

from megajepa.config import ModelConfig
from megajepa.model.transformer import describe
from megajepa.training.checkpoint import locate
from megajepa.training.checkpoint.locate import CheckpointError, SavedCheckpoint, find_checkpoint


def test_every_path_form_names_the_same_checkpoint(tmp_path):
    root = locate.checkpoint_dir(str(tmp_path))
    fake_tag(root, 2)
    newest = fake_tag(root, 4)
    fake_tag(root, 6, complete=False)  # a killed write
    with open(os.path.join(root, locate.LATEST), "w") as f:
        f.write(locate.tag_for(4))
    want = (root, locate.tag_for(4))
    for path in (tmp_path, root, newest, os.path.join(root, locate.LATEST)):
        assert find_checkpoint(str(path)) == want, path
    assert find_checkpoint(str(tmp_path), locate.tag_for(2)) == (root, locate.tag_for(2))
    assert locate.resume_target("auto", str(tmp_path)) == want
    assert locate.resume_target(str(tmp_path), "/elsewhere") == want
    assert locate.resume_target("none", str(tmp_path)) is None


def test_bad_paths_fail_naming_the_path(tmp_path):
    root = locate.checkpoint_dir(str(tmp_path))
    assert locate.resume_target("auto", str(tmp_path)) is None  # nothing saved yet: a fresh start
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        find_checkpoint(str(tmp_path))
    fake_tag(root, 2)
    partial = fake_tag(root, 3, complete=False)
    with pytest.raises(CheckpointError, match=r"step_00000003 is incomplete \(no COMPLETE marker\)"):
        find_checkpoint(partial)
    with pytest.raises(CheckpointError, match=r"available tags: \['step_00000002', 'step_00000003'\]"):
        find_checkpoint(str(tmp_path), "step_00000009")
    with pytest.raises(CheckpointError, match="but tag 'step_00000009' was asked for"):
        find_checkpoint(partial, "step_00000009")
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        find_checkpoint(str(tmp_path / "absent"))


def test_tokenizer_search_order_and_the_run_dirs_own_copies(tmp_path):
    run_dir = tmp_path / "moved"
    root = locate.checkpoint_dir(str(run_dir))
    saved = SavedCheckpoint(root, locate.tag_for(1), "rank0.pt", {"tokenizer": str(tmp_path / "gone")})
    with pytest.raises(CheckpointError, match="tokenizer not found .*pass --tokenizer"):
        saved.tokenizer()
    sp = os.path.join(locate.sentencepiece_dir(str(run_dir)), "tokenizer.model")
    os.makedirs(os.path.dirname(sp))
    open(sp, "w").close()
    assert saved.tokenizer() == sp
    os.makedirs(locate.hf_tokenizer_dir(str(run_dir)))  # continued pretraining's copy comes first
    assert saved.tokenizer() == os.path.join(run_dir, "tokenizer_hf")
    assert saved.tokenizer(override=sp) == sp
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    assert dataclasses.replace(saved, state={"tokenizer": str(recorded)}).tokenizer() == str(recorded)


@pytest.mark.parametrize("prefix", ["", "bf16_"])  # DeepSpeed names a bf16 run's shards bf16_zero_pp_rank_*
def test_optimizer_shards_are_counted_under_either_name(tmp_path, prefix):
    import torch

    from megajepa.training.checkpoint import universal

    tag = fake_tag(str(tmp_path), 4)
    torch.save({"model_config": {}, "dp_world_size": 3}, os.path.join(tag, "zero_pp_rank_0_mp_rank_00_model_states.pt"))
    for r in (0, 2):
        open(os.path.join(tag, f"{prefix}zero_pp_rank_{r}_mp_rank_00_optim_states.pt"), "w").close()
    open(os.path.join(tag, "zero_pp_rank_1_mp_rank_00_model_states.pt.tmp"), "w").close()  # not a shard
    assert locate.optimizer_shards(tag) == {r: f"{prefix}zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 2)}
    assert universal.saved_world_size(tag) == 2
    with pytest.raises(CheckpointError, match=r"written by 3 ranks but the optimizer shard\(s\) of rank\(s\) 1 are"):
        locate.open_checkpoint(tag)
    open(os.path.join(tag, f"{prefix}zero_pp_rank_1_mp_rank_00_optim_states.pt"), "w").close()
    assert locate.open_checkpoint(tag).tag == "step_00000004"


def test_model_config_is_read_strictly():
    arch = tiny_config(vocab_size=320)
    saved = SavedCheckpoint("r", "t", "r/t/rank0.pt", {"model_config": dataclasses.asdict(arch)})
    assert saved.model_config() == arch
    saved.state["model_config"]["qk_norm"] = True  # a field of a newer megajepa: never silently dropped
    with pytest.raises(CheckpointError, match=r"r/t/rank0.pt: model_config has field\(s\) \['qk_norm'\]"):
        saved.model_config()


def test_a_checkpoint_from_before_the_architecture_split_still_loads():
    """Older checkpoints stored the requested ModelConfig, resolved: its preset and init_from_hf beside the sizes."""
    request = ModelConfig(preset="tiny", vocab_size=320, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128)
    old = dataclasses.asdict(request) | {"rope_theta": 10000.0, "max_seq_len": 2048, "tie_embeddings": True,
                                         "init_from_hf": "/models/llama"}
    arch = SavedCheckpoint("r", "t", "r/t/rank0.pt", {"model_config": old}).model_config()
    assert arch == tiny_config(vocab_size=320)
    assert not hasattr(arch, "preset") and "tiny" not in describe(arch)


def test_evaluation_imports_neither_the_loop_nor_deepspeed_nor_the_writer():
    code = ("import sys, megajepa.eval.load, megajepa.eval.generate, megajepa.training.checkpoint.locate; "
            "print([m for m in sys.modules if m.split('.')[0] == 'deepspeed' or m.startswith('megajepa.training.')"
            " and m != 'megajepa.training.checkpoint.locate'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "['megajepa.training.checkpoint']", out.stdout


@pytest.mark.slow
def test_moved_continued_pretraining_run_converts_and_evaluates(tmp_path):
    """A run from a tiny HF checkpoint keeps its tokenizer in tokenizer_hf/; moved elsewhere (the recorded
    path and the source checkpoint gone), convert_to_hf and `evaluate.py generate` both find it, and the
    megajepa checkpoint predicts what transformers' loading of the converted directory predicts."""
    from interop_fixtures import TINY_RUN

    from megajepa.data.corpus import synthetic_split
    from megajepa.data.tokenizer.hf import HFTokenizer
    tok = hf_tokenizer(bos=True)
    src = save_hf(tmp_path / "src", hf_model("llama", len(tok), seed=5), tok)
    first, moved, hf_dir = tmp_path / "run", tmp_path / "elsewhere" / "run", tmp_path / "hf"
    run(["megajepa/train.py", f"output_dir={first}", f"model.init_from_hf={src}", "train.max_steps=2",
         *TINY_RUN[5:]])
    vocab = HFTokenizer(src).hf.get_vocab()  # the source's ids plus the tokens the run added
    shutil.rmtree(src)
    os.makedirs(moved.parent)
    shutil.move(str(first), str(moved))
    run(["tools/convert_to_hf.py", "--checkpoint", str(moved), "--output", str(hf_dir)])
    import transformers
    assert transformers.AutoTokenizer.from_pretrained(str(hf_dir)).get_vocab() == vocab

    _, test = synthetic_split("regex", 50, 3, 11)
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in test))
    predictions = {}
    for name, model in (("ckpt", moved), ("hf", hf_dir)):
        out = tmp_path / f"{name}.jsonl"
        run(["tools/evaluate.py", "generate", "--model", str(model), "--input", str(data), "--output", str(out),
             "--json", str(tmp_path / f"{name}.json"), "--max-new-tokens", "6", "--metric", "exact"])
        predictions[name] = [json.loads(line)["prediction"] for line in open(out)]
    assert len(predictions["ckpt"]) == 3 and predictions["ckpt"] == predictions["hf"]
    report = json.load(open(tmp_path / "ckpt.json"))
    assert report["model"] == str(moved / "checkpoints" / "step_00000002")
