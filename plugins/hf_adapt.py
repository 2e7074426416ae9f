"""Unsupervised task adaptation for hf models (Burns et al. 5.2.2): the language-model loss on unlabelled task text.

Encoders train with the masked-LM loss (transformers' DataCollatorForLanguageModeling, mlm_probability of the
tokens), decoders with the causal-LM loss. Sentence encoders such as all-MiniLM-L6-v2 ship without their
masked-LM head: transformers creates it (the decoder tied to the word embeddings, the transform freshly
initialised), and the adaptation trains it along with the backbone. The whole LM is saved with its
tokenizer; the student and ceiling then load their backbone from it (AutoModel drops the LM head).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from w2s.train import AdaptConfig, cosine_with_warmup, length_buckets, progress_disabled, seed_everything
from w2s_plugins.hf_loading import is_causal, load_pretrained


def adapt_lm(model, texts: list[str], cfg: AdaptConfig, ctx, folder: Path) -> None:
    """Train `model`'s pretrained LM on `texts`; write the adapted LM and its tokenizer to `folder`."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoConfig, DataCollatorForLanguageModeling

    seed_everything(ctx.seed)
    options = model.options
    kwargs = {"gguf_file": options.gguf_file} if options.gguf_file else {}
    causal = is_causal(AutoConfig.from_pretrained(options.path, **kwargs))
    tokenizer, lm = load_pretrained(options, "AutoModelForCausalLM" if causal else "AutoModelForMaskedLM", gguf_file=options.gguf_file)
    lm.to(model.device).train()
    encoded = [{"input_ids": ids} for ids in tokenizer(list(texts), truncation=True, max_length=options.max_length)["input_ids"]]
    collate = DataCollatorForLanguageModeling(tokenizer, mlm=not causal, mlm_probability=cfg.mlm_probability,
                                              return_tensors="pt")
    rng = np.random.default_rng(ctx.seed)
    total = max(1, int(round(math.ceil(len(encoded) / cfg.batch_size) * cfg.epochs)))
    params = [p for p in lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = cosine_with_warmup(optimizer, int(cfg.warmup_frac * total), total)
    batches: list[list[int]] = []
    lengths = [len(e["input_ids"]) for e in encoded]
    for step in tqdm(range(1, total + 1), desc=f"adapt {model.label}", unit="batch", leave=False, disable=progress_disabled()):
        if not batches:
            batches = length_buckets(lengths, cfg.batch_size, rng)
        batch = {k: v.to(model.device) for k, v in collate([encoded[i] for i in batches.pop()]).items()}
        loss = lm(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ctx.log_curve(step, "adapt_loss", float(loss.item()))
    if getattr(lm, "hf_quantizer", None) is not None:  # GGUF loads dequantized: save plain tensors
        lm.hf_quantizer = None
        if hasattr(lm.config, "quantization_config"):
            del lm.config.quantization_config
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
