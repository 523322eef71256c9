"""Every shipped ds_configs/ file, through the real `deepspeed` launcher on 2 CPU ranks: the loss falls,
the checkpoint resumes bitwise (against the uninterrupted run) and converts to a transformers model.
One 8-step run per config shared by the assertions; the NVMe config skips where async_io cannot build."""
import os

import pytest
import torch

import run_helpers as rh

CONFIGS = ["zero3.json", "zero3_offload.json", "zero3_nvme.json", "zero2.json", "zero3_bf16.json"]
STEPS, SAVE = 8, 4
RUN = rh.TINY + [f"train.max_steps={STEPS}", f"train.save_interval={SAVE}", "train.keep_last=3",
                 "train.log_interval=1"]
_RUNS = {}


def _cmd(out, *args):
    return [os.path.join(os.path.dirname(rh.sys.executable), "deepspeed"), "--num_gpus", "2", "--master_port",
            str(rh.free_port()), rh.TRAIN, f"output_dir={out}", *RUN, *args]


@pytest.fixture(params=CONFIGS)
def ds_run(request, tmp_path_factory):
    name = request.param
    extra = [f"deepspeed_config={os.path.join(rh.REPO, 'ds_configs', name)}"]
    if name == "zero3_nvme.json":
        from deepspeed.ops.op_builder import AsyncIOBuilder
        if not AsyncIOBuilder().is_compatible(verbose=False):
            pytest.skip("DeepSpeed's async_io op cannot build here (no libaio-dev): NVMe offload untestable")
        nvme = tmp_path_factory.mktemp("nvme")
        extra.append(f"nvme_path={nvme}")
    if name not in _RUNS:
        root = tmp_path_factory.mktemp(name.replace(".json", ""))
        rc, log = rh.run(_cmd(root / "full", *extra), root / "full.log")
        assert rc == 0, log[-3000:]
        tag = root / "full" / "checkpoints" / f"step_{SAVE:08d}"
        rc, log = rh.run(_cmd(root / "resumed", *extra, f"resume={tag}"), root / "resumed.log")
        assert rc == 0, log[-3000:]
        _RUNS[name] = root
    return name, _RUNS[name]


@pytest.mark.slow
def test_loss_falls(ds_run):
    _, root = ds_run
    got = rh.losses(root / "full")
    assert sorted(got) == list(range(1, STEPS + 1))
    # the NTP term: the total also holds the JEPA and SIGReg terms of the steps loss dropout kept pairs in
    assert got[STEPS]["lm"] < got[1]["lm"] - 0.15, (got[1], got[STEPS])
    assert not any(s["skipped"] for s in got.values())


@pytest.mark.slow
def test_resume_is_bitwise(ds_run):
    _, root = ds_run
    resumed = rh.losses(root / "resumed")
    assert sorted(resumed) == list(range(SAVE + 1, STEPS + 1))
    rh.same_losses(resumed, rh.losses(root / "full"), range(SAVE + 1, STEPS + 1))


@pytest.mark.slow
def test_converts_to_hf(ds_run, tmp_path):
    """The converted model's weights equal DeepSpeed's own consolidation of the same checkpoint."""
    import transformers
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    name, root = ds_run
    ckpt = root / "full" / "checkpoints"
    hf = tmp_path / "hf"
    rc, log = rh.run([rh.sys.executable, os.path.join(rh.REPO, "tools", "convert_to_hf.py"), "--checkpoint",
                      str(ckpt), "--output", str(hf)], tmp_path / "convert.log")
    assert rc == 0, log[-3000:]
    model = transformers.AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    ds = get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=f"step_{STEPS:08d}")
    embed = next(v for k, v in ds.items() if k.endswith("embed_tokens.weight"))
    torch.testing.assert_close(model.get_input_embeddings().weight, embed.float(), rtol=0, atol=0)
    n_hf = sum(p.numel() for p in model.parameters())
    n_ds = sum(v.numel() for k, v in ds.items() if not k.endswith("lm_head.weight") or not model.config.tie_word_embeddings)
    assert n_hf == n_ds
