"""Loading a Hugging Face model for the hf plugin: config (truncated), tokenizer with a pad token, weights."""

from __future__ import annotations

from w2s.api import W2SError
from w2s.train import resolve_dtype


def load_pretrained(options, auto_class: str, path: str | None = None, gguf_file: str | None = None, hint: str = ""):
    """(tokenizer, model) for hf `options`, from `path` (default: options.path), quietly, with one-line errors.

    `num_layers` keeps the first k layers; the revision applies to the configured id, not a saved folder.
    """
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # w2s shows its own progress
    path = path or options.path
    kwargs = {"revision": options.revision} if options.revision and path == options.path else {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    verbosity = hf_logging.get_verbosity()
    try:
        config = AutoConfig.from_pretrained(path, **kwargs)
        if options.num_layers:
            config.num_hidden_layers = min(options.num_layers, config.num_hidden_layers)
            hf_logging.set_verbosity_error()  # the dropped layers' weights are expected to be unused
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = getattr(transformers, auto_class).from_pretrained(path, config=config, dtype=resolve_dtype(options.dtype), **kwargs)
    except (OSError, ValueError) as exc:
        raise W2SError(f"model {path!r}: could not load ({str(exc).splitlines()[0]}); {hint or 'pass a local folder or a reachable hub id'}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer, model
