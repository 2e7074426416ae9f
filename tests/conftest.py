"""Shared fixtures: a tiny BERT built from a config, a tiny sentiment data set, an isolated store."""

import random

import pytest
from click.testing import CliRunner

WORDS = "good great fine awful bad boring fun dull film movie plot actors story not very really but and the a was is".split()


def write_sentiment_tsvs(folder, n_train=160, n_test=60, seed=0):
    """Sentences whose label follows 'good'/'bad' words, with some negation so bow is imperfect."""
    rng = random.Random(seed)
    pos, neg = ["good", "great", "fun", "fine"], ["awful", "bad", "boring", "dull"]
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.tsv", n_train), ("test.tsv", n_test)):
        lines = ["sentence\tlabel"]
        for i in range(n):
            label = i % 2
            word = rng.choice(pos if label else neg)
            if rng.random() < 0.2:  # negation flips the meaning: "not good" is negative
                word = rng.choice(neg if label else pos)
                text = f"the {rng.choice(['film', 'movie', 'plot'])} was not {word}"
            else:
                text = f"the {rng.choice(['film', 'movie', 'plot', 'story'])} was {rng.choice(['very', 'really', 'a'])} {word}"
            lines.append(f"{text}\t{label}")
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A 2-layer BERT with hidden size 32 and a word-level vocab, saved as a local HF folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "review", "sentiment", ":"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)  # transformers 5 ignores vocab_file
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def sentiment_dir(tmp_path):
    return write_sentiment_tsvs(tmp_path / "data")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own W2S_HOME (and so its own default store); no progress bars."""
    monkeypatch.setenv("W2S_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("W2S_PROGRESS", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("W2S_DATA_DIR", raising=False)
    return tmp_path / "home"


@pytest.fixture
def runner():
    return CliRunner()


def sst2_study(data_dir, strong: str, weak: str = 'model = "bow"', n=(40, 80, 60), name="tiny", extra="") -> str:
    """A one-seed SST-2 study TOML: the [weak] and [strong] table bodies are given, `extra` is appended."""
    return f"""
[study]
name = "{name}"
seeds = [0]

[task]
name = "sst2"
data_dir = "{data_dir}"
n_weak_train = {n[0]}
n_transfer = {n[1]}
n_test = {n[2]}

[weak]
{weak}

[strong]
{strong}
{extra}
"""


def study_toml(data_dir, strong_path, name="tiny", losses=("xent", "logconf"), extra=""):
    """The tiny bow -> hf study most tests run."""
    loss_tables = "\n".join(f'[[losses]]\nname = "{l}"\n' for l in losses)
    strong = f"""model = "hf"
[strong.options]
path = "{strong_path}"
max_length = 16
[strong.train]
epochs = 2
batch_size = 16
lr = 1e-3
"""
    return sst2_study(data_dir, strong, name=name, extra=f"{loss_tables}\n{extra}")


LM_WORDS = ("yes no reasonable unreasonable acceptable wrong first second true false answer question scenario excuse "
            "request trait post passage review sentiment positive negative is this or the character show was what "
            "narrator did situation more pleasant for which I my he she it to of in and a an").split()


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """A 2-layer GPT-2 (n_embd 32) with an offline word-level tokenizer, saved as a local HF folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    words = ["[PAD]", "[UNK]", "[EOS]", *dict.fromkeys([*WORDS, *LM_WORDS, ":", "?", ".", ",", "[", "]", "SEP"])]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    config = GPT2Config(vocab_size=len(words), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                        bos_token_id=2, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def store_stage(store, study_id: str, key: str, row: dict, result) -> None:
    """Record a finished stage with `result` the way a driver does: claim it, then finish it."""
    from w2s.running.work import Outcome
    from w2s.storing.claims import Claims, Owner

    claims = Claims(store, Owner.me(), "local")
    claim = claims.claim(key, study_id, row)
    assert claims.finish(key, claim.attempt, Outcome(key, result, started=0.0, finished=0.0))
