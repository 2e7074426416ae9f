"""Truncated causal LMs (hf option num_layers): the first k blocks of the full model, in every loading path, and a
different stage key. Issue 17 uses them as the smaller rungs of a ladder of one LM family."""

import shutil

import pytest

from w2s.planning.protocol import plan_study
from w2s.planning.study import parse_study
from w2s.plugins import make_model
from conftest import sst2_study


def full_lm(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


def same_weights(kept, full) -> bool:
    import torch

    a, b = kept.state_dict(), full.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("head", ["lm", "classifier"])
def test_truncated_causal_lm_keeps_exactly_the_first_k_blocks(tiny_gpt2, head):
    """head = "lm" (AutoModelForCausalLM) and a classifier head (AutoModel) both keep block 0 of the 2, unchanged."""
    from w2s_plugins.hf_lm import load_causal_lm

    full = full_lm(tiny_gpt2)
    assert len(full.transformer.h) == 2
    model = make_model("hf", {"path": str(tiny_gpt2), "head": head, "num_layers": 1}, {}, "strong")
    if head == "lm":
        _, lm = load_causal_lm(model)
        blocks, rest = lm.transformer.h, lm.transformer
    else:
        _, module = model.build(2)
        blocks, rest = module.backbone.h, module.backbone
    assert len(blocks) == 1 and rest.config.num_hidden_layers == 1 and rest.config.n_layer == 1
    assert same_weights(blocks[0], full.transformer.h[0])
    assert not same_weights(blocks[0], full.transformer.h[1])  # the comparison can tell blocks apart
    assert same_weights(rest.wte, full.transformer.wte) and same_weights(rest.ln_f, full.transformer.ln_f)
    # more layers than the model has keeps them all
    _, whole = load_causal_lm(make_model("hf", {"path": str(tiny_gpt2), "head": "lm", "num_layers": 5}, {}, "strong"))
    assert len(whole.transformer.h) == 2


def test_truncated_lm_saves_and_reloads_with_layer_types(tmp_path, tiny_gpt2):
    """A config with per-layer `layer_types` (Qwen2) is cut to match: the truncated LM saves and reloads with k blocks."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from w2s_plugins.hf_lm import load_lm, pretrained_lm

    folder = tmp_path / "tiny-qwen2"
    config = Qwen2Config(vocab_size=128, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_gpt2 / name).exists():
            shutil.copy(tiny_gpt2 / name, folder / name)
    model = make_model("hf", {"path": str(folder), "head": "lm", "num_layers": 2}, {}, "strong")
    trained = pretrained_lm(model)
    assert len(trained.lm.model.layers) == 2 and len(trained.lm.config.layer_types) == 2
    trained.save(tmp_path / "ckpt")  # failed before: num_hidden_layers (2) must equal len(layer_types) (3)
    again = load_lm(model, tmp_path / "ckpt")
    assert len(again.lm.model.layers) == 2
    assert same_weights(again.lm.model.layers[1], full_lm(folder).model.layers[1])


def fit_keys(data_dir, tiny_gpt2, num_layers=None) -> dict:
    layers = f", num_layers = {num_layers}" if num_layers else ""
    strong = f'model = "hf"\nlabel = "lm"\noptions = {{ path = "{tiny_gpt2}", head = "lm", max_length = 32{layers} }}\n'
    stages, *_ = plan_study(parse_study(sst2_study(data_dir, strong, n=(20, 20, 20))))
    return {s.role: s.key for s in stages if s.kind == "fit"}


def test_num_layers_changes_the_strong_stage_keys_only(sentiment_dir, tiny_gpt2):
    full, cut, cut2, again = (fit_keys(sentiment_dir, tiny_gpt2, k) for k in (None, 1, 2, 1))
    assert set(full) == {"weak", "student", "ceiling"}
    assert cut["weak"] == full["weak"]  # the bow supervisor is not touched
    assert cut["student"] != full["student"] and cut["ceiling"] != full["ceiling"]
    assert cut2["ceiling"] not in (full["ceiling"], cut["ceiling"])  # num_layers = 2 is named even though the model has 2
    assert again == cut  # and the keys are stable
