"""The whole HF path through the real launchers (2 CPU ranks, ZeRO-3, gloo) and the real CLIs:
pretrain -> convert_to_hf -> transformers; HF -> continued pretraining -> HF; HF -> convert_from_hf
(0 steps) -> convert_to_hf bit for bit; and bad input. Three 2-rank launches; about 3.5 min on 2 cores."""
import glob
import os
import re

import pytest
import torch
import transformers
from interop_fixtures import TINY_RUN, hf_model, hf_tokenizer, run, save_hf

from megajepa.config import load_config
from megajepa.data.tokenizer import load_tokenizer
from megajepa.data.tokenizer.hf import HFTokenizer
from megajepa.data.tokenizer.sentencepiece import PREDICTORS, SEP
from megajepa.model.architecture import ModelArchitecture
from megajepa.model.attention import dense_mask
from megajepa.model.transformer import Transformer

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def consolidated_model(run_dir: str) -> tuple[Transformer, dict]:
    """The megajepa model of a run's latest checkpoint, through DeepSpeed's consolidation alone."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    state = get_fp32_state_dict_from_zero_checkpoint(os.path.join(run_dir, "checkpoints"))
    client = torch.load(glob.glob(os.path.join(run_dir, "checkpoints", "step_*", "*model_states.pt"))[-1],
                        weights_only=False, map_location="cpu")
    model = Transformer(ModelArchitecture.from_saved(client["model_config"], run_dir)).eval()
    model.load_state_dict({k[len("model."):]: v for k, v in state.items()}, strict=True)
    return model, client


def ours_logits(model, ids):
    seg = torch.zeros_like(ids)
    mask = dense_mask(seg, torch.full_like(seg, -1), seg, model.config.sliding_window)
    with torch.no_grad():
        return model.lm_head(model(ids, torch.arange(ids.shape[1]).expand_as(ids), mask))


def lm_losses(log: str) -> list[float]:
    return [float(x) for x in re.findall(r"step \d+ .*? lm=([0-9.]+)", log)]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A from-scratch 2-rank ZeRO-3 run of a few steps, converted with the CLI."""
    root = tmp_path_factory.mktemp("pretrain")
    run_dir, hf_dir = str(root / "run"), str(root / "hf")
    run(["megajepa/train.py", f"output_dir={run_dir}", "train.max_steps=4", "data.vocab_size=400", *TINY_RUN],
        ranks=2)
    run(["tools/convert_to_hf.py", "--checkpoint", run_dir, "--output", hf_dir])
    return run_dir, hf_dir


@pytest.mark.slow
def test_pretrained_run_loads_in_transformers_and_generates_the_same(pretrained):
    from megajepa.data.corpus import synthetic_split
    from megajepa.data.records import record_views
    from megajepa.model.generation import greedy_generate
    run_dir, hf_dir = pretrained
    ours, client = consolidated_model(run_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    ids = torch.randint(0, ours.config.vocab_size, (2, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours_logits(ours, ids) - hf(ids).logits).abs().max().item() < 1e-4

    sp = load_tokenizer(client["tokenizer"])
    _, test = synthetic_split("regex", 20, 4, 7)
    views = [record_views(r) for r in test]
    prompts = [[sp.bos_id] + sp.encode(v[0]) + [sp.sep_id] for v in views]
    mine = greedy_generate(ours, prompts, max_new_tokens=10, eos_id=sp.eos_id, pad_id=sp.pad_id)
    for prompt, expected in zip(prompts, mine):
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, eos_token_id=sp.eos_id,
                          pad_token_id=sp.pad_id)[0, len(prompt):].tolist()
        assert expected == (out[:out.index(sp.eos_id)] if sp.eos_id in out else out)

    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    for v in views:
        text = v[0] + " " + v[1]
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text)
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    assert [tok.encode(p, add_special_tokens=False) for p in [SEP, *PREDICTORS]] == \
        [[sp.sep_id]] + [[i] for i in sp.predictor_ids]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (sp.bos_id, sp.eos_id, sp.pad_id)
    # the chat template renders a conversation exactly as the packer laid out training streams
    from megajepa.data.packing import LayoutConfig, Specials, build_unit
    for v in views:
        chat = [{"role": "system", "content": "not rendered"}, {"role": "user", "content": v[0]},
                {"role": "assistant", "content": v[1]}]
        stream = build_unit([sp.encode(v[0]), sp.encode(v[1])], Specials.from_tokenizer(sp), LayoutConfig(),
                            with_jepa=False).segments[0].tokens
        assert tok.apply_chat_template(chat, tokenize=True)["input_ids"] == stream


@pytest.mark.slow
def test_continued_pretraining_from_hf_lowers_the_loss_and_converts_back(tmp_path):
    tok = hf_tokenizer(bos=True)  # Llama-like: no pad, no sep/predictors yet
    src = save_hf(tmp_path / "src", hf_model("llama", len(tok), seed=5), tok)
    run_dir, back = str(tmp_path / "run"), str(tmp_path / "back")
    p = run(["megajepa/train.py", f"output_dir={run_dir}", f"model.init_from_hf={src}", "train.max_steps=8",
             "train.lr=3e-3", "train.warmup_steps=1", *TINY_RUN[5:]], ranks=2)
    losses = lm_losses(p.stdout + p.stderr)
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.05, losses
    run(["tools/convert_to_hf.py", "--checkpoint", run_dir, "--output", back])
    ours, _ = consolidated_model(run_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(back).eval()
    assert type(hf).__name__ == "LlamaForCausalLM" and hf.config.vocab_size == ours.config.vocab_size > len(tok)
    ids = torch.randint(0, len(tok), (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours_logits(ours, ids) - hf(ids).logits).abs().max().item() < 1e-4
    back_tok = transformers.AutoTokenizer.from_pretrained(back)
    assert back_tok.get_vocab() == HFTokenizer(src).hf.get_vocab()  # the run's ids: source + added tokens


@pytest.mark.slow
def test_round_trip_hf_megajepa_hf_is_bit_exact(tmp_path):
    from safetensors.torch import load_file
    tok = hf_tokenizer(bos=False)  # Qwen2-like
    staged = str(tmp_path / "tok")
    HFTokenizer(save_hf(staged, hf_model("qwen2", 64), tok)).save(staged)  # specials present: no new rows
    src = save_hf(tmp_path / "src", hf_model("qwen2", len(tok) + 64, seed=6, tie=True),
                  transformers.AutoTokenizer.from_pretrained(staged), dtype=torch.bfloat16)
    run_dir, back = str(tmp_path / "run"), str(tmp_path / "back")
    run(["tools/convert_from_hf.py", "--hf", src, "--output", run_dir], ranks=2)
    assert not os.path.exists(run_dir + ".partial")
    cfg = load_config(os.path.join(run_dir, "config.yaml"))  # the config that continues this run
    assert cfg.model.qkv_bias and cfg.model.tie_embeddings and cfg.resume == "auto"
    run(["tools/convert_to_hf.py", "--checkpoint", run_dir, "--output", back, "--dtype", "bf16",
         "--max-shard-size", "40KB"])
    assert len(glob.glob(os.path.join(back, "*.safetensors"))) > 1  # shards + index
    before = load_file(os.path.join(src, "model.safetensors"))
    after = {}
    for shard in glob.glob(os.path.join(back, "*.safetensors")):
        after.update(load_file(shard))
    assert sorted(before) == sorted(after)
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype == torch.bfloat16, name
        assert torch.equal(after[name].view(torch.int16), tensor.view(torch.int16)), name
    a, b = transformers.AutoConfig.from_pretrained(src), transformers.AutoConfig.from_pretrained(back)
    assert type(a) is type(b) and a.architectures == b.architectures == ["Qwen2ForCausalLM"]
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "tie_word_embeddings", "rms_norm_eps", "max_position_embeddings"):
        assert getattr(a, key) == getattr(b, key), key
    assert a.rope_parameters["rope_theta"] == b.rope_parameters["rope_theta"] == 500000.0


def _convert(args, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location("convert_to_hf", os.path.join(
        os.path.dirname(os.path.dirname(__file__)), "tools", "convert_to_hf.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(args)
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_bad_input_fails_clearly_and_writes_nothing(pretrained, tmp_path, capsys):
    import shutil
    run_dir = pretrained[0]
    out = str(tmp_path / "out")
    code, err = _convert(["--checkpoint", str(tmp_path), "--output", out], capsys)
    assert code == 2 and "is not a checkpoint" in err and not os.path.exists(out)

    code, err = _convert(["--checkpoint", run_dir, "--output", out, "--tag", "step_00000099"], capsys)
    assert code == 2 and "available tags: ['step_00000004']" in err and not os.path.exists(out)

    broken = str(tmp_path / "broken")
    shutil.copytree(os.path.join(run_dir, "checkpoints", "step_00000004"), os.path.join(broken, "step_00000004"))
    os.remove(os.path.join(broken, "step_00000004", "zero_pp_rank_1_mp_rank_00_optim_states.pt"))
    code, err = _convert(["--checkpoint", os.path.join(broken, "step_00000004"), "--output", out], capsys)
    assert code == 2 and "written by 2 ranks but the optimizer shard(s) of rank(s) 1 are missing" \
        in err and not os.path.exists(out)

    os.remove(os.path.join(broken, "step_00000004", "COMPLETE"))  # an interrupted write
    code, err = _convert(["--checkpoint", broken, "--output", out, "--tag", "step_00000004"], capsys)
    assert code == 2 and "step_00000004 is incomplete (no COMPLETE marker)" in err and not os.path.exists(out)

    big = hf_tokenizer(bos=True)
    big.add_tokens([f"<x{i}>" for i in range(200)])
    big.save_pretrained(str(tmp_path / "big_tok"))
    code, err = _convert(["--checkpoint", run_dir, "--output", out, "--tokenizer", str(tmp_path / "big_tok")],
                         capsys)
    rows = transformers.AutoConfig.from_pretrained(pretrained[1]).vocab_size
    ids = HFTokenizer(str(tmp_path / "big_tok")).vocab_size
    assert ids > rows and code == 2 and f"has {ids} ids but the model's embedding has {rows} rows" in err, err
    assert not os.path.exists(out) and not glob.glob(str(tmp_path / ".out.tmp-*"))

    os.makedirs(out)
    open(os.path.join(out, "keep.txt"), "w").close()
    code, err = _convert(["--checkpoint", run_dir, "--output", out], capsys)
    assert code == 2 and "pass --overwrite" in err and os.listdir(out) == ["keep.txt"]

    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64))
    p = run(["tools/convert_from_hf.py", "--hf", save_hf(tmp_path / "gpt2", gpt2), "--output",
             str(tmp_path / "from_gpt2")], check=False)
    assert p.returncode == 2 and "unsupported architecture 'GPT2LMHeadModel'" in p.stderr
    assert not os.path.exists(tmp_path / "from_gpt2")
