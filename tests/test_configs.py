"""Every example in configs/ loads with load_config and says what its header says (no training).
Paths it names (shards, a local checkpoint) are swapped for temporary ones, since validation checks them."""
import os

import pytest

from megajepa.config import ConfigError, load_config

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
# configs/paper/: the reference code's Llama fine-tuning settings, name -> (lambda, k, lr)
PAPER = {"nlrx_synth.yaml": (1.0, 1, 2e-5), "nlrx_turk.yaml": (1.0, 1, 2e-5), "gsm8k.yaml": (0.5, 1, 1e-5),
         "spider.yaml": (0.5, 1, 1e-5)}


def _load(name, *overrides):
    return load_config(os.path.join(CONFIGS, name), list(overrides))


def test_every_config_is_tested():
    assert sorted(os.listdir(CONFIGS)) == sorted(["demo.yaml", "pretrain_125m_shards.yaml", "pretrain_1b_shards.yaml",
                                                  "continue_llama.yaml", "stp_plain_text.yaml", "paper", "study"])
    assert sorted(os.listdir(os.path.join(CONFIGS, "paper"))) == sorted([*PAPER, "stp_nlrx.yaml"])


def test_demo_evaluates_the_held_out_split():
    cfg = _load("demo.yaml")
    assert cfg.data.sources == [] and cfg.model.preset == "tiny"
    assert cfg.eval.file is None and cfg.eval.max_examples == 200 and cfg.eval.metric == "exact,regex"
    assert cfg.train.max_steps % cfg.eval.interval == 0  # the last step is evaluated


@pytest.mark.parametrize("name,preset,ds", [("pretrain_125m_shards.yaml", "125m", "zero2.json"),
                                            ("pretrain_1b_shards.yaml", "1b", "zero3.json")])
def test_pretrain_on_shards(tmp_path, name, preset, ds):
    with pytest.raises(ConfigError, match="data.shards"):  # the shipped path is a placeholder to fill
        _load(name)
    cfg = _load(name, f"data.shards={tmp_path}")
    assert cfg.model.preset == preset and os.path.basename(cfg.deepspeed_config) == ds
    assert os.path.isfile(os.path.join(os.path.dirname(CONFIGS), cfg.deepspeed_config))


def test_continue_from_a_local_llama(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    cfg = _load("continue_llama.yaml", f"model.init_from_hf={tmp_path}")
    assert cfg.data.tokenizer is None and cfg.train.lr < 1e-4 and cfg.data.sources


def test_stp_on_plain_text():
    cfg = _load("stp_plain_text.yaml")
    assert cfg.to_dict()["stp"]["lambda"] > 0 and cfg.stp.mode == "random_span"


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_settings(tmp_path, name):
    """The reference's settings: labels on the whole rendered example, Enc at the last content token."""
    with pytest.raises(ConfigError, match="model.init_from_hf"):  # the shipped path is a placeholder to fill
        _load(os.path.join("paper", name))
    (tmp_path / "config.json").write_text("{}")
    cfg = _load(os.path.join("paper", name), f"model.init_from_hf={tmp_path}")
    assert (cfg.jepa.lam, cfg.jepa.predictors, cfg.train.lr) == PAPER[name]
    assert cfg.data.label_prompt and cfg.data.system_prompt and cfg.jepa.embed_at == "last"
    assert (cfg.jepa.dropout, cfg.jepa.regularizer) == (0.0, "none")  # the reference's term, not our default
    assert cfg.data.sources[0]["path"].startswith("data/llm-jepa/") and cfg.data.tokenizer is None


def test_stp_as_in_the_reference_run_script(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    cfg = _load(os.path.join("paper", "stp_nlrx.yaml"), f"model.init_from_hf={tmp_path}")
    assert cfg.to_dict()["stp"]["lambda"] == 0.02 and cfg.to_dict()["stp"]["mode"] == "random_span"


def test_study_configs(tmp_path, monkeypatch):
    """configs/study/: the base config and every arm of arms.yaml load as benchmarks/study_v2.py applies
    them (E1, E2 and E3's stages); the model has >= 3M parameters (issue 13); the NTP arm packs no views."""
    import yaml

    from megajepa.model.transformer import Transformer, resolve_model_config
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(CONFIGS), "benchmarks"))
    import study_v2
    base = os.path.join("study", "e1_nlrx_synth.yaml")
    with open(os.path.join(CONFIGS, "study", "arms.yaml")) as f:
        arms = yaml.safe_load(f)
    assert sorted(os.listdir(os.path.join(CONFIGS, "study"))) == ["arms.yaml", "e1_nlrx_synth.yaml",
                                                                  "e2_finetune_rt.yaml", "e2_paraphrase.yaml",
                                                                  "e3_base.yaml", "e3_finetune_nlrx.yaml"]
    assert {"ntp", "jepa_paper", "jepa_sigreg", "infonce", "stp", "stp_jepa"} <= set(arms)
    for arm, settings in arms.items():
        cfg = _load(base, *study_v2.overrides_of(settings))
        assert settings["about"] and (cfg.jepa.lam > 0 or cfg.stp.lam > 0 or arm == "ntp"), arm
    ntp = _load(base, *study_v2.overrides_of(arms["ntp"]))
    assert ntp.jepa.lam == 0 and ntp.stp.lam == 0
    paper = _load(base, *study_v2.overrides_of(arms["jepa_paper"]))
    assert (paper.jepa.lam, paper.jepa.embed_at, paper.jepa.dropout, paper.jepa.regularizer) == (1.0, "last", 0.0, "none")
    model = Transformer(resolve_model_config(ntp.model, vocab_size=ntp.data.vocab_size))
    assert sum(p.numel() for p in model.parameters()) >= 3_000_000
    pretrain = _load(os.path.join("study", "e2_paraphrase.yaml"), *study_v2.overrides_of(arms["jepa_sigreg"]))
    assert pretrain.data.train_all and pretrain.jepa.pairs == "chain" and pretrain.model.dim == ntp.model.dim
    (tmp_path / "config.json").write_text("{}")
    finetune = _load(os.path.join("study", "e2_finetune_rt.yaml"), f"model.init_from_hf={tmp_path}")
    assert finetune.jepa.lam == 0 and finetune.stp.lam == 0 and finetune.data.tokenizer is None
    base = _load(os.path.join("study", "e3_base.yaml"))  # E3: an NTP base on every token, E1's shape
    assert base.jepa.lam == 0 and base.data.label_prompt and base.model.dim == ntp.model.dim
    for arm in ("ntp", "jepa_sigreg"):  # each arm's objective over the base's weights
        e3 = _load(os.path.join("study", "e3_finetune_nlrx.yaml"), f"model.init_from_hf={tmp_path}",
                   *study_v2.overrides_of(arms[arm]))
        assert e3.jepa.lam == arms[arm]["jepa"]["lambda"] and e3.data.tokenizer is None
