"""Causal-LM scoring and training over per-example choice lists (e.g. the legal moves of a chess puzzle).

hf with head = "lm" routes here when each example carries its own `choices`. An example's logits
are the summed log-probabilities of each choice string (" " + choice, multi-token) after the
task's rendered prompt; the prompt runs once and its KV cache is shared by all choices.

Training follows the hf option `choice_objective`:
- "generative" (default): the LM is fine-tuned on (prompt -> move + EOS) pairs, the NLL of each
  target move weighted by its target mass; the EOS teaches free generation to stop after the move.
  Only moves with mass run, in padded batches, so it trains at the model's plain fine-tuning speed.
  It is cross-entropy to the (soft) labels, so it takes the xent loss only (checked while planning).
- "choices": the study's loss on the logits over all legal moves, plus the targets' generative NLL.
  Any loss works (logconf, product), but every legal move is backpropagated (~35x the work).
"""

from __future__ import annotations

import math

import numpy as np

from w2s.api import W2SError
from w2s.train import autocast, cosine_with_warmup, length_buckets, progress_disabled, seed_everything
from w2s_plugins.hf_lm import LMTrained, choice_token_ids, pretrained_lm, softmax
from w2s_plugins.hf_loading import report_truncation


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


def encode_prompts(trained: LMTrained, examples, task, ctx=None) -> list[list[int]]:
    """Prompt token ids, truncated (from the left by default) so the end of the prompt is kept."""
    room = 8  # tokens left for the longest move
    prompts, limit = [task.render(e) for e in examples], trained.owner.options.max_length - room
    report_truncation(ctx, trained.tokenizer, prompts, limit, trained.tokenizer.truncation_side)
    enc = trained.tokenizer(prompts, truncation=True, max_length=limit)
    return enc["input_ids"]


def predict_choices(trained: LMTrained, examples, task, ctx=None) -> list[np.ndarray]:
    """Softmax over each example's own choices of their summed log-probabilities."""
    import torch

    prompts = encode_prompts(trained, examples, task, ctx)
    trained.lm.eval()
    out = []
    items = list(zip(examples, prompts))
    iterable = ctx.progress(items, total=len(items), desc="score choices") if ctx else items
    with torch.inference_mode(), autocast(trained.owner.device, trained.owner.options.precision):
        for e, ids in iterable:
            scores = choice_logprobs(trained.lm, ids, choice_token_ids(trained.tokenizer, e.choices), trained.owner.device)
            out.append(softmax(scores.cpu().numpy().astype(float)))
    return out


def generate_texts(trained: LMTrained, examples, task, max_new_tokens: int = 10, ctx=None) -> list[str]:
    """Greedy free generation: the decoded completion of each example's rendered prompt (LMTrained.generate)."""
    import torch
    from tqdm.auto import tqdm

    tok = trained.tokenizer
    prompts = encode_prompts(trained, examples, task)
    texts = []
    trained.lm.eval()
    items = list(zip(examples, prompts))
    if ctx is not None:
        items = ctx.progress(items, total=len(items), desc="generate")
    else:
        items = tqdm(items, total=len(items), desc="generate", unit="example", leave=False, disable=progress_disabled())
    with torch.inference_mode(), autocast(trained.owner.device, trained.owner.options.precision):
        for e, ids in items:
            prompt = torch.tensor([ids], device=trained.owner.device)
            generated = trained.lm.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                                            do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            texts.append(tok.decode(generated[0, len(ids):], skip_special_tokens=True))
    return texts


def generated_rows(examples, task, texts: list[str]) -> list[np.ndarray]:
    """One-hot on the choice each generated text names, all zeros when it names none (an illegal move)."""
    out = []
    for e, text in zip(examples, texts):
        index = task.choice_index(e, text)
        row = np.zeros(len(e.choices))
        if index is not None:
            row[index] = 1.0
        out.append(row)
    return out


def generate_choices(trained: LMTrained, examples, task, max_new_tokens: int = 10) -> tuple[list[np.ndarray], list[str]]:
    """Greedy free generation: (one-hot rows over each example's choices, all zeros for an illegal move; the texts)."""
    texts = generate_texts(trained, examples, task, max_new_tokens)
    return generated_rows(examples, task, texts), texts


def weighted_moves(soft_targets, floor: float = 1e-3) -> list[list[tuple[int, float]]]:
    """Per example, the (choice, weight) pairs with target mass above `floor`, weights summing to 1."""
    out = []
    for t in soft_targets:
        t = np.asarray(t, dtype=float)
        keep = [int(i) for i in np.flatnonzero(t > floor)] or [int(np.argmax(t))]
        total = float(t[keep].sum()) or 1.0
        out.append([(i, float(t[i]) / total) for i in keep])
    return out


def sequence_logprobs(lm, sequences: list[tuple[list[int], list[int]]], device):
    """(N,) summed log-probabilities of each (prompt, continuation) pair's continuation, one padded batch."""
    import torch

    width = max(len(p) + len(c) for p, c in sequences)
    ids = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    scored = torch.zeros((len(sequences), width), dtype=torch.bool, device=device)
    for row, (prompt, cont) in enumerate(sequences):
        n = len(prompt) + len(cont)
        ids[row, :n], mask[row, :n] = torch.tensor(prompt + cont), 1
        scored[row, len(prompt) : n] = True  # right padding: positions stay 0..n-1
    logp = torch.log_softmax(lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float(), -1)
    token = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (token * scored[:, 1:]).sum(1)


def end_tokens(tokenizer) -> list[int]:
    """What ends a generated answer: the EOS token, so that generation learns to stop after the move."""
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


GENERATIVE_LOSSES = ("xent", "xent_hard")  # a weighted sum of move NLLs: the soft targets' moves, or the top move only


def check_objective(model, loss) -> None:
    """The hf option choice_objective, checked against the study's loss."""
    if model.options.choice_objective == "generative" and loss.registry_name not in GENERATIVE_LOSSES:
        raise W2SError(f'{model.label}.options.choice_objective = "generative" trains with xent or xent_hard only (loss is {loss.name!r}); '
                       f'set choice_objective = "choices" to apply {loss.name!r} over all legal moves, or use loss xent')


def fit_choices(model, examples, soft_targets, loss, task, ctx) -> LMTrained:
    """Fine-tune the LM on per-example choices: generative NLL of the target moves, or the study loss over all moves."""
    import torch
    from tqdm.auto import tqdm

    objective = model.options.choice_objective  # checked against the loss by check_lm_fit
    seed_everything(ctx.seed)
    trained = pretrained_lm(model)
    lm, cfg, device, precision = trained.lm, model.train, model.device, model.options.precision
    prompts = encode_prompts(trained, examples, task, ctx)
    choices = [choice_token_ids(trained.tokenizer, e.choices) for e in examples]
    targets = [torch.tensor(np.asarray(t, dtype=np.float32), device=device) for t in soft_targets]
    hard = loss.registry_name == "xent_hard"
    moves = [[(int(np.argmax(t)), 1.0)] for t in soft_targets] if hard else weighted_moves(soft_targets)
    end = end_tokens(trained.tokenizer)

    def generative(batch, progress: float) -> tuple[float, None]:
        """NLL of each example's target moves, weighted; forward passes of at most batch_size sequences (soft targets
        give many moves per example: 19 on average from the 8-layer chess rung, whose one pass ran out of memory)."""
        pairs = [(i, c, w) for i in batch for c, w in moves[i]]
        total = 0.0
        for start in range(0, len(pairs), cfg.batch_size):
            part = pairs[start : start + cfg.batch_size]
            with autocast(device, precision):  # the forward pass only; backward follows the forward's dtypes
                logp = sequence_logprobs(lm, [(prompts[i], choices[i][c] + end) for i, c, _ in part], device)
            value = -(logp * torch.tensor([w for _, _, w in part], device=device)).sum() / len(batch)
            value.backward()  # gradients add up over the parts: the same gradient as one pass
            total += value.item()
        return total, None

    def over_choices(batch, progress: float) -> tuple[float, float]:
        total, right = 0.0, 0
        for i in batch:  # one example at a time: every legal move is in the graph
            with autocast(device, precision):
                logits = choice_logprobs(lm, prompts[i], choices[i], device)
            value = loss(logits.unsqueeze(0), targets[i].unsqueeze(0), progress) - (targets[i] * logits).sum()
            (value / len(batch)).backward()
            total += value.item() / len(batch)
            right += int(logits.argmax() == targets[i].argmax())
        return total, right / len(batch)

    run_batch = generative if objective == "generative" else over_choices
    steps = max(1, math.ceil(len(examples) * cfg.epochs / cfg.batch_size))
    params = [p for p in lm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = cosine_with_warmup(optimizer, int(cfg.warmup_frac * steps), steps)
    rng = np.random.default_rng(ctx.seed)
    lengths = [len(p) for p in prompts]
    batches: list[list[int]] = []
    lm.train()
    bar = tqdm(total=steps, desc=f"fit {model.label} ({objective})", unit="batch", leave=False, disable=progress_disabled())
    for step in range(steps):
        if not batches:
            batches = length_buckets(lengths, cfg.batch_size, rng)
        total, acc = run_batch(batches.pop(), step / steps)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ctx.log_curve(step + 1, "train_loss", total)
        if acc is not None:
            ctx.log_curve(step + 1, "train_acc", acc)
        bar.set_postfix(loss=f"{total:.3f}")
        bar.update(1)
    bar.close()
    lm.eval()
    return trained
