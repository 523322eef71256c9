"""One layout, four renderings: the training stream (packer), the generation prompt (eval), the embedding
sequences (analysis) and the exported chat template give the same token ids for the same record, with
transformers' apply_chat_template as the independent reference."""
import pytest
from transformers import AutoTokenizer

from megajepa.data import layout
from megajepa.data.packing import LayoutConfig, Specials, build_unit
from megajepa.data.tokenizer import export_tokenizer
from megajepa.data.tokenizer.hf import HFTokenizer
from megajepa.data.tokenizer.sentencepiece import train_tokenizer
from megajepa.eval.embeddings import view_sequences
from megajepa.eval.generate import items_from_records, prompt_ids

RECORDS = [
    {"messages": [{"role": "system", "content": "answer with a regex"},
                  {"role": "user", "content": "lines with three capital letters"},
                  {"role": "assistant", "content": "[A-Z]{3}"}]},
    {"messages": [{"role": "user", "content": "what is 12 plus 30"}, {"role": "assistant", "content": "42"}]},
    {"views": ["select every name from users", "SELECT name FROM users;"]},
]


def chat(record) -> list[dict]:
    if "messages" in record:
        return record["messages"]
    return [{"role": "user", "content": record["views"][0]}, {"role": "assistant", "content": record["views"][1]}]


@pytest.fixture(scope="module", params=[False, True], ids=["no_system", "system"])
def tokenizers(request, tmp_path_factory):
    """(ours, transformers' own load of our export) for a run trained with or without the system turn."""
    root = tmp_path_factory.mktemp("layout")
    texts = [m["content"] for r in RECORDS for m in chat(r)] * 20
    sp = train_tokenizer(texts, root / "tokenizer.model", 400)
    export_tokenizer(sp, str(root / "hf"), chat_template=layout.chat_template(request.param))
    return request.param, [sp, HFTokenizer(str(root / "hf"))], AutoTokenizer.from_pretrained(str(root / "hf"))


def _ids(out):
    return out["input_ids"] if hasattr(out, "keys") else out


@pytest.mark.parametrize("predictors", [0, 1, 3])
@pytest.mark.parametrize("embed_at", ["end", "last"])
def test_every_rendering_equals_the_chat_template(tokenizers, predictors, embed_at):
    with_system, ours, hf = tokenizers
    for tok in ours:
        sp = Specials.from_tokenizer(tok)
        for item, record in zip(items_from_records(RECORDS), RECORDS):
            messages = chat(record)
            system = tok.encode(item.system) if with_system and item.system else None
            text, code = tok.encode(item.text), tok.encode(item.reference)
            unit = build_unit([text, code], sp, LayoutConfig(predictors=predictors, embed_at=embed_at),
                              prompt=system)
            full = _ids(hf.apply_chat_template(messages, tokenize=True))
            assert unit.segments[0].tokens == full
            prompt = _ids(hf.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True))
            assert prompt_ids(tok, item, with_system) == prompt == full[:len(prompt)]

            enc_text, pred, enc_code = view_sequences(tok, item.text, item.reference, predictors, embed_at)
            user = _ids(hf.apply_chat_template([messages[-2]], tokenize=True, add_generation_prompt=True))
            alone = _ids(hf.apply_chat_template([messages[-1]], tokenize=True))
            assert enc_text == (user if embed_at == "end" else user[:-1])
            assert enc_code == (alone if embed_at == "end" else alone[:-1])
            assert pred == enc_text + tok.predictor_ids[:predictors]
