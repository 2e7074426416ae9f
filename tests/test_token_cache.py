"""The hf tokenization cache (plugins/hf_tokens.py): each text is tokenized once per (tokenizer, max_length, side),
the cached ids equal the tokenizer's, and a changed tokenizer (vocabulary) or changed texts are tokenized afresh."""

import shutil

import pytest
from transformers import AutoTokenizer
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from w2s.api import Example
from w2s.plugins import make_model, make_task
from w2s_plugins import hf_tokens

TEXTS = ["the film was very good", "the plot was not fun", "a really boring story and the actors were dull"]


@pytest.fixture
def calls(monkeypatch):
    """Every text the tokenizer is called on (any tokenizer class)."""
    seen: list[str] = []
    call = PreTrainedTokenizerBase.__call__

    def spy(self, text=None, *args, **kwargs):
        seen.extend([text] if isinstance(text, str) else list(text or []))
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", spy)
    hf_tokens.clear_memory()
    yield seen
    hf_tokens.clear_memory()


def encode(folder, texts, max_length=8, side="right"):
    model = make_model("hf", {"path": str(folder), "max_length": max_length, "truncation": side}, {}, "strong")
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return model.encode_texts(tokenizer, texts), tokenizer


def test_cached_ids_equal_the_tokenizers(tiny_bert, calls):
    for side in ("right", "left"):
        (first, tokenizer), (again, _) = encode(tiny_bert, TEXTS, side=side), encode(tiny_bert, TEXTS, side=side)
        tokenizer.truncation_side = side
        direct = tokenizer(TEXTS, truncation=True, max_length=8)
        expected = [{"input_ids": i, "attention_mask": m} for i, m in zip(direct["input_ids"], direct["attention_mask"])]
        assert first == again == expected


def test_a_second_encode_reads_the_cache_in_memory_and_on_disk(tiny_bert, calls, isolated_home):
    encode(tiny_bert, TEXTS)
    assert calls, "the first encode tokenizes"
    assert list((isolated_home / "cache" / "tokens").rglob("*.npz")), "and writes its entries to disk"
    calls.clear()
    encode(tiny_bert, TEXTS)
    assert calls == []  # in-process entries
    hf_tokens.clear_memory()  # a new process: only the disk remains
    encode(tiny_bert, list(reversed(TEXTS)))
    assert calls == []
    encode(tiny_bert, TEXTS[:2] + ["the movie was great"])  # another split of the same pool: only the new text
    assert calls == ["the movie was great"] * 2  # truncated ids, then the untruncated length


def test_other_options_are_other_entries(tiny_bert, calls):
    encode(tiny_bert, TEXTS)
    calls.clear()
    encode(tiny_bert, TEXTS, max_length=16)
    assert len(calls) == 2 * len(TEXTS)
    calls.clear()
    encode(tiny_bert, TEXTS, side="left")
    assert len(calls) == 2 * len(TEXTS)


def test_a_changed_vocabulary_is_tokenized_afresh(tiny_bert, tmp_path, calls):
    before, _ = encode(tiny_bert, TEXTS)
    changed = shutil.copytree(tiny_bert, tmp_path / "changed")
    vocab = (changed / "vocab.txt").read_text().split("\n")
    good, bad = vocab.index("good"), vocab.index("bad")
    vocab[good], vocab[bad] = "bad", "good"  # same size, two ids swapped
    (changed / "vocab.txt").write_text("\n".join(vocab))
    (changed / "tokenizer.json").unlink(missing_ok=True)  # rebuilt from vocab.txt
    tokenizer = AutoTokenizer.from_pretrained(str(changed))
    assert tokenizer.convert_tokens_to_ids("good") == bad, "the copy really has another vocabulary"
    calls.clear()
    after, _ = encode(changed, TEXTS)
    assert len(calls) == 2 * len(TEXTS)
    assert after[0]["input_ids"] != before[0]["input_ids"] and tokenizer.convert_tokens_to_ids("good") in after[0]["input_ids"]


def test_a_copy_of_the_same_tokenizer_shares_the_entries(tiny_bert, tmp_path, calls):
    encode(tiny_bert, TEXTS)
    calls.clear()
    encode(shutil.copytree(tiny_bert, tmp_path / "checkpoint"), TEXTS)  # e.g. the tokenizer saved with a fitted model
    assert calls == []


def test_changed_texts_are_tokenized_afresh_and_the_cache_can_be_off(tiny_bert, calls, monkeypatch):
    encode(tiny_bert, TEXTS)
    calls.clear()
    edited = [TEXTS[0] + " film", *TEXTS[1:]]
    assert encode(tiny_bert, edited)[0] == encode(tiny_bert, edited)[0]
    assert calls == [edited[0]] * 2
    monkeypatch.setenv("W2S_TOKEN_CACHE", "0")
    calls.clear()
    encode(tiny_bert, TEXTS)
    assert len(calls) == 2 * len(TEXTS)


def test_the_truncated_share_comes_from_the_cached_lengths(tiny_bert, calls):
    class Ctx:
        split, metrics = "train", {}

        def log_metric(self, split, name, value):
            self.metrics[name] = value

        def echo(self, message):
            pass

    task = make_task("sst2", {}, None, "task")
    examples = [Example(str(i), t, 1) for i, t in enumerate(TEXTS)]
    model = make_model("hf", {"path": str(tiny_bert), "max_length": 8}, {}, "strong")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    model.encode(tokenizer, examples, task)
    calls.clear()
    ctx = Ctx()
    model.encode(tokenizer, examples, task, ctx)
    assert calls == []
    full = [len(i) for i in tokenizer([task.render(e) for e in examples])["input_ids"]]
    assert ctx.metrics == {"truncated_share": sum(n > 8 for n in full) / 3, "truncated": sum(n > 8 for n in full)}
