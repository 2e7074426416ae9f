"""Tokens for the openai model: tiktoken encodings (offline from quicktok's vocab), chat and label-word tokens.

`encoding` loads a tiktoken encoding, rebuilding its BPE file from the quicktok wheel when offline;
`chat_tokens` counts a chat request's tokens as OpenAI's cookbook does (the cost estimate uses it);
`label_tokens` gives each label word's first token, the one answer token the model scores.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import struct
import tempfile
from pathlib import Path

from w2s.api import W2SError

TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
QUICKTOK_VOCABS = {"o200k_base": "o200k.vocab", "cl100k_base": "cl100k.vocab"}


def _tiktoken_cache_dir() -> str:
    return os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR", os.path.join(tempfile.gettempdir(), "data-gym-cache")))


def install_encoding_from_quicktok(name: str) -> bool:
    """Offline: rebuild tiktoken's BPE file from the quicktok wheel into tiktoken's cache.

    tiktoken itself checks the file against its pinned sha256, so a wrong file is never used.
    """
    cache_dir = _tiktoken_cache_dir()
    if name not in QUICKTOK_VOCABS or not cache_dir:
        return False
    try:
        import quicktok
    except ImportError:
        return False
    blob = (Path(quicktok.__file__).parent / "data" / QUICKTOK_VOCABS[name]).read_bytes()
    (count,), offset, lines = struct.unpack_from("<I", blob, 0), 4, []
    for _ in range(count):
        (size,) = struct.unpack_from("<H", blob, offset)
        token = blob[offset + 2 : offset + 2 + size]
        (rank,) = struct.unpack_from("<I", blob, offset + 2 + size)
        offset += 6 + size
        lines.append(b"%s %d" % (base64.b64encode(token), rank))
    os.makedirs(cache_dir, exist_ok=True)
    key = hashlib.sha1(TIKTOKEN_URL.format(name=name).encode()).hexdigest()
    Path(cache_dir, key).write_bytes(b"\n".join(lines) + b"\n")
    return True


@functools.cache
def encoding(name: str):
    """A tiktoken encoding; offline, rebuilt from quicktok's bundled (hash-checked) vocab."""
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except Exception as exc:
        if install_encoding_from_quicktok(name):
            try:
                return tiktoken.get_encoding(name)
            except Exception:
                pass
        raise W2SError(
            f"tiktoken could not load encoding {name!r} ({type(exc).__name__}); go online once, "
            f"set TIKTOKEN_CACHE_DIR to a folder holding it, or `pip install quicktok-v1`"
        ) from None


def encoding_name(model: str) -> str:
    import tiktoken

    base = model.split(":")[1] if model.startswith("ft:") else model
    try:
        return tiktoken.encoding_name_for_model(base)
    except KeyError:
        return "o200k_base"


def chat_tokens(enc, messages: list[dict], reply_priming: bool = True) -> int:
    """Tokens of a chat request, counted as in OpenAI's cookbook (3 per message, 3 to prime the reply)."""
    total = sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"])) for m in messages)
    return total + (3 if reply_priming else 0)


def label_tokens(enc, label_words) -> list[str]:
    """First token of each label word; an error if two labels share it (only one token is scored)."""
    firsts = [enc.decode([enc.encode(w)[0]]) for w in label_words]
    seen: dict[str, str] = {}
    for word, tok in zip(label_words, firsts):
        norm = tok.strip().lower()
        if norm in seen:
            raise W2SError(
                f"label words {seen[norm]!r} and {word!r} share the first token {tok!r} ({enc.name}); the openai "
                f"model scores one answer token, so the task needs label words whose first tokens differ"
            )
        seen[norm] = word
    return firsts
