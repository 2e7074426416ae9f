"""Tokenization cache of the hf plugin: each text is tokenized once per (tokenizer, max_length, truncation side).

Entries are per text, so different splits, stages and seeds over one pool share them. They live on disk
under `$W2S_HOME/cache/tokens/<fingerprint>/` (the fingerprint covers the tokenizer's vocabulary, normalizer,
pre-tokenizer, post-processor and special tokens, the tokenizers version, max_length and the side), one
.npz shard per batch of newly tokenized texts, written aside and renamed into place; an in-process LRU of
those folders sits in front, so a process reads each shard once. An entry holds the truncated ids and the
untruncated length (what the truncated-share metric needs). W2S_TOKEN_CACHE=0 turns the cache off.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from w2s.api import fingerprint
from w2s.home import w2s_home
from w2s_plugins.hf_loading import report_truncation

MEMORY_FOLDERS = 8  # cache folders (tokenizer x options) kept in this process's memory


class Entries:
    """One cache folder's entries in memory: text key -> (ids, untruncated length), and the shards read so far."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.ids: dict[str, np.ndarray] = {}
        self.full: dict[str, int] = {}
        self.shards: set[str] = set()

    def read_new_shards(self) -> None:
        """Load shards written since the last look (by this process or another one)."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.npz")):
            if path.name in self.shards or path.name.endswith(".tmp.npz"):  # .tmp: being written right now
                continue
            try:
                with np.load(path) as data:
                    keys, offsets, flat, full = data["keys"].tolist(), data["offsets"], data["ids"], data["full"]
            except (OSError, ValueError, KeyError):  # unreadable: ignore it, the texts get tokenized again
                continue
            for i, key in enumerate(keys):
                self.ids[key] = flat[offsets[i] : offsets[i + 1]]
                self.full[key] = int(full[i])
            self.shards.add(path.name)

    def write(self, keys: list[str], ids: list[list[int]], full: list[int]) -> None:
        """Persist new entries as one shard (written aside, then renamed: a reader never sees half a file)."""
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(i) for i in ids])
        flat = np.fromiter((t for row in ids for t in row), dtype=np.int64, count=int(offsets[-1]))
        name = f"{fingerprint(keys)}.npz"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f"{name[:-4]}.{os.getpid()}.tmp.npz"
            np.savez(tmp, keys=np.array(keys), offsets=offsets, ids=flat, full=np.asarray(full, dtype=np.int64))
            tmp.replace(self.folder / name)
            self.shards.add(name)
        except OSError:  # a read-only or full home: the entries stay in memory only
            pass


_memory: OrderedDict[str, Entries] = OrderedDict()


def clear_memory() -> None:
    """Forget the in-process entries (the disk cache stays): the next lookup reads the shards again."""
    _memory.clear()


def enabled() -> bool:
    return os.environ.get("W2S_TOKEN_CACHE", "1") != "0"


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides a tokenizer's ids: its serialized pipeline (vocabulary, normalizer, pre-tokenizer, post-processor,
    added tokens) without the per-call truncation and padding state, its special tokens and the library versions.
    Not its folder: a fitted checkpoint's copy of the tokenizer shares entries with the original."""
    import tokenizers
    import transformers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts = [type(tokenizer).__name__, transformers.__version__, tokenizers.__version__, sorted(set(tokenizer.all_special_tokens))]
    digest = hashlib.sha256()
    if backend is not None:
        truncation, padding = backend.truncation, backend.padding  # set by each call of the tokenizer: not identity
        backend.no_truncation()
        backend.no_padding()
        try:
            digest.update(backend.to_str().encode())
        finally:
            if truncation:
                backend.enable_truncation(**truncation)
            if padding:
                backend.enable_padding(**padding)
    else:  # a slow (pure Python) tokenizer: its vocabulary and settings
        digest.update(repr(sorted(tokenizer.get_vocab().items())).encode())
        parts.append({k: v for k, v in tokenizer.init_kwargs.items() if k != "name_or_path" and isinstance(v, (str, int, float, bool, type(None)))})
    return fingerprint([digest.hexdigest(), parts])


def text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def entries_for(tokenizer, max_length: int, side: str) -> Entries:
    folder = w2s_home() / "cache" / "tokens" / fingerprint([tokenizer_fingerprint(tokenizer), max_length, side])
    key = str(folder)
    if key not in _memory:
        _memory[key] = Entries(folder)
    _memory.move_to_end(key)
    while len(_memory) > MEMORY_FOLDERS:
        _memory.popitem(last=False)
    return _memory[key]


def tokenize(tokenizer, texts: list[str], max_length: int, side: str) -> tuple[list[list[int]], list[int]]:
    """The tokenizer itself: ids cut to `max_length` on `side`, and each text's untruncated length."""
    tokenizer.truncation_side = side
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    full = [len(i) for i in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
    return [list(i) for i in ids], full


def encode_cached(tokenizer, texts: list[str], max_length: int, side: str) -> tuple[list[list[int]], list[int]]:
    """(token ids cut to `max_length` on `side`, untruncated length) of each text, as the tokenizer gives them;
    only texts not cached before go through the tokenizer."""
    texts = list(texts)
    if not texts:
        return [], []
    if not enabled():
        return tokenize(tokenizer, texts, max_length, side)
    entries = entries_for(tokenizer, max_length, side)
    keys = [text_key(t) for t in texts]
    if any(k not in entries.ids for k in keys):
        entries.read_new_shards()
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key not in entries.ids:
            first.setdefault(key, i)  # a text given twice is tokenized once
    missing = list(first.values())
    if missing:
        ids, full = tokenize(tokenizer, [texts[i] for i in missing], max_length, side)
        new_keys = [keys[i] for i in missing]
        entries.write(new_keys, ids, full)
        for key, row, n in zip(new_keys, ids, full):
            entries.ids[key] = np.asarray(row, dtype=np.int64)
            entries.full[key] = n
    return [entries.ids[k].tolist() for k in keys], [entries.full[k] for k in keys]


def encode_inputs(tokenizer, texts: list[str], max_length: int, side: str, ctx=None) -> list[dict]:
    """Model inputs of `texts` (input_ids cut to `max_length` on `side`, attention_mask) from the cache, with the
    truncated share recorded with `ctx` (hf_loading.report_truncation) from the cached untruncated lengths."""
    ids, lengths = encode_cached(tokenizer, texts, max_length, side)
    report_truncation(ctx, tokenizer, texts, max_length, side, lengths)
    return [{"input_ids": row, "attention_mask": [1] * len(row)} for row in ids]
