"""LM-head mode of the hf model (option head = "lm"): a causal LM scores label words after the prompt.

An example's K logits are the summed log-probabilities of each label word's token sequence
(" " + word) after the task's rendered prompt, so every loss (xent, logconf, ...) applies
unchanged, and fine-tuning and inference read the identical template. Nothing parses generated
text: "unreasonable" and "reasonable" are different token sequences with different scores.
`score(prompt, choices)` works for any list of choice strings (multi-token, any count).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from w2s.api import Trained, W2SError, has_own_choices
from w2s.train import autocast, fit_module, length_buckets, parameter_counts, seed_everything
from w2s_plugins.hf_loading import load_pretrained
from w2s_plugins.hf_tokens import encode_inputs


def load_causal_lm(model, path: str | None = None, gguf_file: str | None = None):
    """Tokenizer and AutoModelForCausalLM for an hf model's options (or a saved folder)."""
    tokenizer, lm = load_pretrained(model.options, "AutoModelForCausalLM", path, gguf_file, 'head = "lm" needs a causal LM')
    tokenizer.truncation_side = model.truncation_side()  # auto: left, keeping the end of a long prompt (the question, "Answer:")
    return tokenizer, lm.to(model.device)


def choice_token_ids(tokenizer, choices) -> list[list[int]]:
    """Token ids of each choice as it follows the prompt (with a leading space)."""
    ids = [tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in choices]
    empty = [c for c, i in zip(choices, ids) if not i]
    if empty:
        raise W2SError(f"label words {empty} tokenize to nothing; use non-empty label words")
    return ids


def hidden_states(lm, input_ids, attention_mask, prefix=None):
    """Last hidden states of right-padded inputs, optionally after a cached shared prefix (cache, length)."""
    import copy

    import torch

    if prefix is None:
        return lm.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    cache, length = prefix
    batch = input_ids.shape[0]
    past = copy.deepcopy(cache)
    past.batch_repeat_interleave(batch)
    mask = torch.cat([torch.ones((batch, length), dtype=attention_mask.dtype, device=attention_mask.device), attention_mask], 1)
    positions = (length + torch.arange(input_ids.shape[1], device=input_ids.device)).expand(batch, -1)
    return lm.base_model(input_ids=input_ids, attention_mask=mask, past_key_values=past, position_ids=positions,
                         use_cache=True).last_hidden_state


def prefix_cache(lm, prefix_ids: list[int], device):
    """The key/value cache of a prefix shared by every prompt of a batch (e.g. the k-shot demonstrations)."""
    import torch

    ids = torch.tensor([prefix_ids], device=device)
    return lm.base_model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True).past_key_values, len(prefix_ids)


def choice_logprobs(lm, input_ids, attention_mask, choice_ids: list[list[int]], prefix=None):
    """(B, K) summed log-probabilities of each choice's tokens after each right-padded prompt (after `prefix`)."""
    import torch

    lengths = attention_mask.sum(1)
    if all(len(c) == 1 for c in choice_ids):  # one forward: next-token distribution at the prompt end
        hidden = hidden_states(lm, input_ids, attention_mask, prefix)
        last = hidden[torch.arange(len(lengths), device=hidden.device), lengths - 1]
        logp = torch.log_softmax(lm.get_output_embeddings()(last).float(), -1)
        return logp[:, [c[0] for c in choice_ids]]
    return torch.stack([continuation_logprob(lm, input_ids, lengths, c, prefix) for c in choice_ids], dim=1)


def continuation_logprob(lm, input_ids, lengths, choice: list[int], prefix=None):
    """(B,) log-probability of the token sequence `choice` after each prompt."""
    import torch

    batch, m = len(lengths), len(choice)
    width = int(lengths.max()) + m
    ids = torch.full((batch, width), int(input_ids[0, 0]), dtype=input_ids.dtype, device=input_ids.device)
    mask = torch.zeros((batch, width), dtype=torch.long, device=input_ids.device)
    target = torch.tensor(choice, device=input_ids.device)
    for i, n in enumerate(lengths.tolist()):
        ids[i, :n], ids[i, n : n + m], mask[i, : n + m] = input_ids[i, :n], target, 1
    hidden = hidden_states(lm, ids, mask, prefix)
    rows = torch.arange(batch, device=ids.device).unsqueeze(1)
    positions = lengths.unsqueeze(1) - 1 + torch.arange(m, device=ids.device).unsqueeze(0)  # predicts choice[j]
    logp = torch.log_softmax(lm.get_output_embeddings()(hidden[rows, positions]).float(), -1)
    return logp.gather(-1, target.expand(batch, m).unsqueeze(-1)).squeeze(-1).sum(1)


def label_word_head_class():
    """LabelWordHead, defined on first use so importing the plugin does not import torch."""
    import torch

    class LabelWordHead(torch.nn.Module):
        """Wraps a causal LM: inputs -> (B, K) label-word log-probabilities, usable as logits."""

        def __init__(self, lm, choice_ids: list[list[int]]):
            super().__init__()
            self.lm = lm
            self.choice_ids = choice_ids

        def forward(self, input_ids, attention_mask):
            return choice_logprobs(self.lm, input_ids, attention_mask, self.choice_ids)

    return LabelWordHead


class LMTrained(Trained):
    """A causal LM (pretrained or fine-tuned) that scores prompts by label-word log-probabilities."""

    def __init__(self, lm, tokenizer, owner):
        self.lm = lm
        self.tokenizer = tokenizer
        self.owner = owner

    def parameter_counts(self):
        return parameter_counts(self.lm)

    def predict(self, examples, task, ctx=None):
        if has_own_choices(task, examples):  # e.g. chess: each example scores its own legal moves
            from w2s_plugins.lm_choices import predict_choices

            return predict_choices(self, examples, task, ctx)
        scores = self.score_many([task.render(e) for e in examples], [task.label_words] * len(examples), ctx)
        return np.stack([softmax(s) for s in scores]) if scores else np.zeros((0, task.num_labels))

    def generate(self, examples, task, ctx=None) -> list[str]:
        """Greedy completions of the rendered prompts (up to 10 new tokens; chess: the move, checked by the task)."""
        from w2s_plugins.lm_choices import generate_texts

        return generate_texts(self, examples, task, ctx=ctx)

    def score(self, prompt: str, choices) -> np.ndarray:
        """Summed log-probability of each choice string after `prompt`."""
        return self.score_many([prompt], [choices])[0]

    def score_many(self, prompts: list[str], choices: list, ctx=None) -> list[np.ndarray]:
        """score() for many prompts, batched by length and grouped by their choice lists."""
        import torch

        out: list[np.ndarray | None] = [None] * len(prompts)
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(choices):
            groups.setdefault(tuple(c), []).append(i)
        self.lm.eval()
        with torch.inference_mode(), autocast(self.owner.device, self.owner.options.precision):
            for group_choices, idx in groups.items():
                ids = choice_token_ids(self.tokenizer, group_choices)
                encoded = self.encode([prompts[i] for i in idx], max(len(c) for c in ids), ctx)
                shared, encoded = split_shared_prefix(encoded)
                prefix = prefix_cache(self.lm, shared, self.owner.device) if shared else None
                for batch in length_buckets([len(e["input_ids"]) for e in encoded], self.owner.train.eval_batch_size,
                                            np.random.default_rng(0), shuffle=False):
                    inputs = self.tokenizer.pad([encoded[b] for b in batch], return_tensors="pt").to(self.owner.device)
                    logp = choice_logprobs(self.lm, inputs["input_ids"], inputs["attention_mask"], ids, prefix).cpu().numpy()
                    for b, row in zip(batch, logp):
                        out[idx[b]] = row.astype(float)
        return out

    def encode(self, prompts: list[str], room: int = 1, ctx=None) -> list[dict]:
        """Tokenized prompts, truncated (from the left by default) to leave room for the longest choice."""
        limit = self.owner.options.max_length - room
        return encode_inputs(self.tokenizer, prompts, limit, self.tokenizer.truncation_side, ctx)  # each prompt tokenized once

    def save(self, path: Path):
        path.mkdir(parents=True, exist_ok=True)
        if getattr(self.lm, "hf_quantizer", None) is not None:  # GGUF loads dequantized: save plain tensors
            self.lm.hf_quantizer = None
            if hasattr(self.lm.config, "quantization_config"):
                del self.lm.config.quantization_config
        self.lm.save_pretrained(path / "lm")
        self.tokenizer.save_pretrained(path / "lm")
        (path / "w2s.json").write_text(json.dumps({"head": "lm"}))

    def free(self):
        self.lm = None


def split_shared_prefix(encoded: list[dict], minimum: int = 16) -> tuple[list[int], list[dict]]:
    """The token prefix all prompts share (e.g. k-shot demonstrations, computed once) and the rest of each.

    Exact: the model sees the same tokens; every prompt keeps at least one token of its own.
    """
    if len(encoded) < 2:
        return [], encoded
    first, shortest = encoded[0]["input_ids"], min(len(e["input_ids"]) for e in encoded)
    n = 0
    while n < shortest - 1 and all(e["input_ids"][n] == first[n] for e in encoded):
        n += 1
    if n < minimum:
        return [], encoded
    return list(first[:n]), [{"input_ids": e["input_ids"][n:], "attention_mask": e["attention_mask"][n:]} for e in encoded]


def softmax(scores: np.ndarray) -> np.ndarray:
    z = np.exp(scores - scores.max())
    return z / z.sum()


def pretrained_lm(model) -> LMTrained:
    """The model as released, before any fine-tuning."""
    tokenizer, lm = load_causal_lm(model, gguf_file=model.options.gguf_file)
    return LMTrained(lm, tokenizer, model)


def check_lm_fit(model, examples, loss, task) -> None:
    """What head = "lm" fitting needs: full fine-tuning, and xent for the generative choice objective."""
    if getattr(model.train, "mode", "finetune") != "finetune":
        raise W2SError(f"{model.label}.train.mode: head = \"lm\" fine-tunes the LM itself; set mode = \"finetune\" or head = \"classifier\"")
    if has_own_choices(task, examples):
        from w2s_plugins.lm_choices import check_objective

        check_objective(model, loss)


def fit_lm(model, examples, soft_targets, loss, task, ctx) -> LMTrained:
    """Fine-tune the whole LM so the label words' log-probabilities fit the soft targets."""
    check_lm_fit(model, examples, loss, task)
    if has_own_choices(task, examples):  # per-example choice lists (chess moves): w2s_plugins.lm_choices
        from w2s_plugins.lm_choices import fit_choices

        return fit_choices(model, examples, soft_targets, loss, task, ctx)
    seed_everything(ctx.seed)
    trained = pretrained_lm(model)
    ids = choice_token_ids(trained.tokenizer, task.label_words)
    head = label_word_head_class()(trained.lm, ids)
    encoded = trained.encode([task.render(e) for e in examples], max(len(c) for c in ids), ctx)
    collate = lambda batch: trained.tokenizer.pad(batch, return_tensors="pt")  # noqa: E731
    validation = ctx.validation  # oracle GT early stopping (study: gt_early_stopping)
    evaluate = (lambda: float((trained.predict(validation.examples, task).argmax(1) == validation.labels).mean())) if validation else None
    fit_module(head, encoded, np.asarray(soft_targets), loss, model.train, collate, ctx, model.device, desc=f"fit {model.label} (lm)",
               evaluate=evaluate, eval_every=validation.eval_every if validation else 0, precision=model.options.precision)
    return trained


def load_lm(model, path: Path) -> LMTrained:
    tokenizer, lm = load_causal_lm(model, path=str(Path(path) / "lm"))
    return LMTrained(lm, tokenizer, model)
