"""Causal-LM scoring and training over per-example choice lists (e.g. the legal moves of a chess puzzle).

hf with head = "lm" routes here when each example carries its own `choices`. An example's logits
are the summed log-probabilities of each choice string (" " + choice, multi-token) after the
task's rendered prompt; the prompt runs once and its KV cache is shared by all choices. Training
applies the study's loss to those choice logits, plus the generative NLL of the target move(s),
so that free generation learns to produce the move as well.
"""

from __future__ import annotations

import math

import numpy as np

from w2s.train import cosine_with_warmup, seed_everything
from w2s_plugins.hf_lm import LMTrained, choice_token_ids, pretrained_lm, softmax


def choice_logprobs(lm, prompt_ids: list[int], choice_ids: list[list[int]], device):
    """(K,) summed log-probabilities of each choice's tokens after one prompt (shared KV cache)."""
    import torch

    out = lm(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), -1)[[c[0] for c in choice_ids]]
    width = max(len(c) for c in choice_ids) - 1
    if width == 0:
        return first
    k = len(choice_ids)
    cache = out.past_key_values
    cache.batch_repeat_interleave(k)
    feed = torch.zeros((k, width), dtype=torch.long, device=device)  # right-padded: pads never precede a real token
    target = torch.zeros((k, width), dtype=torch.long, device=device)
    valid = torch.zeros((k, width), dtype=torch.bool, device=device)
    for i, c in enumerate(choice_ids):
        n = len(c) - 1
        feed[i, :n], target[i, :n], valid[i, :n] = torch.tensor(c[:-1]), torch.tensor(c[1:]), True
    logits = lm(input_ids=feed, past_key_values=cache, use_cache=False).logits.float()
    rest = torch.log_softmax(logits, -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return first + (rest * valid).sum(1)


def encode_prompts(trained: LMTrained, examples, task) -> list[list[int]]:
    """Prompt token ids, truncated from the left so the end of the prompt is kept."""
    room = 8  # tokens left for the longest move
    enc = trained.tokenizer([task.render(e) for e in examples], truncation=True, max_length=trained.owner.options.max_length - room)
    return enc["input_ids"]


def predict_choices(trained: LMTrained, examples, task, ctx=None) -> list[np.ndarray]:
    """Softmax over each example's own choices of their summed log-probabilities."""
    import torch

    prompts = encode_prompts(trained, examples, task)
    trained.lm.eval()
    out = []
    items = list(zip(examples, prompts))
    iterable = ctx.progress(items, total=len(items), desc="score choices") if ctx else items
    with torch.inference_mode():
        for e, ids in iterable:
            scores = choice_logprobs(trained.lm, ids, choice_token_ids(trained.tokenizer, e.choices), trained.owner.device)
            out.append(softmax(scores.cpu().numpy().astype(float)))
    return out


def generate_choices(trained: LMTrained, examples, task, max_new_tokens: int = 6) -> list[np.ndarray]:
    """Greedy free generation; one-hot on the named choice, all zeros when it names none (illegal move)."""
    import torch

    tok = trained.tokenizer
    prompts = encode_prompts(trained, examples, task)
    out, texts = [], []
    trained.lm.eval()
    with torch.inference_mode():
        for e, ids in zip(examples, prompts):
            prompt = torch.tensor([ids], device=trained.owner.device)
            generated = trained.lm.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                                            do_sample=False, pad_token_id=tok.pad_token_id)
            text = tok.decode(generated[0, len(ids):], skip_special_tokens=True)
            index = task.choice_index(e, text) if hasattr(task, "choice_index") else (e.choices.index(text.strip()) if text.strip() in e.choices else None)
            row = np.zeros(len(e.choices))
            if index is not None:
                row[index] = 1.0
            out.append(row)
            texts.append(text)
    return out, texts


def fit_choices(model, examples, soft_targets, loss, task, ctx) -> LMTrained:
    """Fine-tune the LM on each example's choice logits (study loss) plus the targets' generative NLL."""
    import torch

    seed_everything(ctx.seed)
    trained = pretrained_lm(model)
    lm, cfg, device = trained.lm, model.train, model.device
    prompts = encode_prompts(trained, examples, task)
    choices = [choice_token_ids(trained.tokenizer, e.choices) for e in examples]
    targets = [torch.tensor(np.asarray(t, dtype=np.float32), device=device) for t in soft_targets]
    steps = max(1, math.ceil(len(examples) * cfg.epochs / cfg.batch_size))
    params = [p for p in lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = cosine_with_warmup(optimizer, int(cfg.warmup_frac * steps), steps)
    order = np.random.default_rng(ctx.seed).permutation(np.tile(np.arange(len(examples)), math.ceil(cfg.epochs) + 1))
    lm.train()
    for step in range(steps):
        batch = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        total, right = 0.0, 0
        for i in batch:
            logits = choice_logprobs(lm, prompts[i], choices[i], device)
            value = loss(logits.unsqueeze(0), targets[i].unsqueeze(0), step / steps) - (targets[i] * logits).sum()
            (value / len(batch)).backward()
            total += value.item() / len(batch)
            right += int(logits.argmax() == targets[i].argmax())
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ctx.log_curve(step + 1, "train_loss", total)
        ctx.log_curve(step + 1, "train_acc", right / len(batch))
    lm.eval()
    return trained
