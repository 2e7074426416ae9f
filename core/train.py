"""The one shared torch loop: dynamic padding, length bucketing, AdamW + cosine warmup, seeding."""

from __future__ import annotations

import math
import os
import random
from typing import Callable, Sequence

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from .api import Loss, Options, StageContext


class TrainConfig(Options):
    """Training hyperparameters shared by every torch model."""

    epochs: float = Field(default=2, gt=0)
    lr: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=32, ge=1)
    batch_tokens: int | None = Field(
        default=None, ge=1, description="fill each training batch up to this many padded tokens (rows x longest row) "
        "instead of batch_size examples: short texts make bigger batches; None keeps batch_size")
    eval_batch_size: int = Field(default=64, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    warmup_frac: float = Field(default=0.1, ge=0, le=1)
    weight_decay: float = Field(default=0.01, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)


class AdaptConfig(Options):
    """Unsupervised task adaptation (Burns et al. 5.2.2): the strong model's language-model loss on the task's
    unlabelled transfer text, before the student and the ceiling start from the adapted weights."""

    epochs: float = Field(default=1, gt=0)
    lr: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=16, ge=1)
    warmup_frac: float = Field(default=0.1, ge=0, le=1)
    weight_decay: float = Field(default=0.01, ge=0)
    mlm_probability: float = Field(default=0.15, gt=0, lt=1, description="encoders: the share of tokens masked")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)  # same seed, same machine -> same numbers
    # Deterministic mode also fills every new tensor with NaN to expose reads of uninitialised memory (a debugging
    # aid, not needed for determinism: every kernel writes what it returns). In a MiniLM fit on CPU that was 4,400 fills
    # per 10 steps: 1-2% of the CPU time on a quiet core, ~10% when memory bandwidth is contended.
    torch.utils.deterministic.fill_uninitialized_memory = False


def parameter_counts(module) -> dict[str, int]:
    """Weights of a torch module (shared tensors counted once), and the same without its embedding tables."""
    import torch

    every = {id(p): p.numel() for p in module.parameters()}
    embedded = {id(p) for m in module.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    return {"n_params": sum(every.values()), "n_params_non_embedding": sum(n for i, n in every.items() if i not in embedded)}


def resolve_device(name: str = "auto"):
    """`auto` picks cuda, then mps, then cpu; anything else is passed to torch.device."""
    import torch

    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


PRECISIONS = ("fp32", "bf16")


def autocast(device, precision: str = "fp32"):
    """The context of a forward pass: nothing for fp32; for bf16, torch.autocast to bfloat16 on the device (matmuls
    and convolutions in bf16, reductions and the loss in fp32; the weights and the optimizer stay fp32)."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")


def token_length(encoded: dict) -> int:
    """Tokens of one encoded example: its input_ids, or both sides' (a_input_ids, b_input_ids) for a pair."""
    return sum(len(v) for k, v in encoded.items() if k.endswith("input_ids"))


def length_buckets(lengths: Sequence[int], batch_size: int, rng: np.random.Generator, shuffle: bool = True) -> list[list[int]]:
    """Batches of similar length: shuffle, sort within chunks of 50 batches, shuffle the batches."""
    order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        piece = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [list(piece[i : i + batch_size]) for i in range(0, len(piece), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def token_budget_batches(lengths: Sequence[int], max_tokens: int, rng: np.random.Generator, shuffle: bool = True,
                         chunk: int = 2048) -> list[list[int]]:
    """Batches of similar length filled up to `max_tokens` padded tokens (rows x the longest row): shuffle, sort
    within chunks of `chunk` examples, pack in order, shuffle the batches. Every example lands in exactly one
    batch; one longer than the budget goes alone."""
    order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        batch: list[int] = []
        longest = 0
        for i in sorted(order[start : start + chunk], key=lambda i: lengths[i]):
            if batch and (len(batch) + 1) * max(longest, lengths[i]) > max_tokens:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(int(i))
            longest = max(longest, lengths[i])
        if batch:
            batches.append(batch)
    if shuffle:
        rng.shuffle(batches)
    return batches


def training_batches(lengths: Sequence[int], cfg: "TrainConfig", rng: np.random.Generator) -> list[list[int]]:
    """One epoch's batches: by token budget when cfg.batch_tokens is set, else batch_size examples of similar length."""
    if cfg.batch_tokens:
        return token_budget_batches(lengths, cfg.batch_tokens, rng)
    return length_buckets(lengths, cfg.batch_size, rng)


def cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int):
    import torch

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit_module(
    module,
    encoded: list[dict],
    targets: np.ndarray,
    loss: Loss,
    cfg: TrainConfig,
    collate: Callable[[list[dict]], dict],
    ctx: StageContext,
    device,
    parameters=None,
    desc: str = "train",
    evaluate: Callable[[], float] | None = None,
    eval_every: int = 0,
    precision: str = "fp32",
) -> None:
    """Train `module` (inputs -> logits) in place on `encoded` examples against soft `targets`.

    With `evaluate` (a validation accuracy), it is called every `eval_every` optimizer steps and at
    the end, and the module ends with the best-scoring weights (oracle early stopping). `precision`
    "bf16" runs the forward passes under bfloat16 autocast (see `autocast`).
    """
    import torch

    seed_everything(ctx.seed)
    rng = np.random.default_rng(ctx.seed)
    lengths = [token_length(e) for e in encoded]
    best = BestCheckpoint(module, evaluate, ctx) if evaluate else None
    if cfg.batch_tokens:  # as many batches as the first epoch packs
        steps_per_epoch = len(training_batches(lengths, cfg, np.random.default_rng(ctx.seed)))
    else:
        steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total_batches = max(1, int(round(steps_per_epoch * cfg.epochs)))
    total_steps = math.ceil(total_batches / cfg.grad_accum)
    params = [p for p in (parameters if parameters is not None else module.parameters()) if p.requires_grad]
    fused = torch.device(device).type in ("cpu", "cuda")  # one kernel per step instead of a loop over tensors
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    scheduler = cosine_with_warmup(optimizer, int(cfg.warmup_frac * total_steps), total_steps)
    target_t = torch.tensor(np.asarray(targets), dtype=torch.float32)
    module.train()
    batches: list[list[int]] = []
    done = 0
    bar = tqdm(total=total_batches, desc=desc, unit="batch", leave=False, disable=progress_disabled())
    while done < total_batches:
        if not batches:
            batches = training_batches(lengths, cfg, rng)
        idx = batches.pop()
        inputs = {k: v.to(device) for k, v in collate([encoded[i] for i in idx]).items()}
        with autocast(device, precision):
            logits = module(**inputs)
        logits = logits.float()
        batch_targets = target_t[idx].to(device)
        value = loss(logits, batch_targets, done / total_batches)
        (value / cfg.grad_accum).backward()
        done += 1
        if done % cfg.grad_accum == 0 or done == total_batches:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step = math.ceil(done / cfg.grad_accum)
            if best and (step % max(1, eval_every) == 0 or done == total_batches):
                best.check(step)
        acc = (logits.argmax(-1) == batch_targets.argmax(-1)).float().mean()
        loss_value, acc = torch.stack([value.detach(), acc]).tolist()  # one host sync per step, not three
        ctx.log_curve(done, "train_loss", loss_value)
        ctx.log_curve(done, "train_acc", acc)
        ctx.log_curve(done, "lr", scheduler.get_last_lr()[0])
        if not bar.disable:
            bar.set_postfix(loss=f"{loss_value:.3f}")
        bar.update(1)
    bar.close()
    if best:
        best.restore()
    module.eval()


class BestCheckpoint:
    """Keeps a copy of the weights with the best validation score seen so far."""

    def __init__(self, module, evaluate: Callable[[], float], ctx: StageContext):
        self.module, self.evaluate, self.ctx = module, evaluate, ctx
        self.score, self.step, self.state = -math.inf, 0, None

    def check(self, step: int) -> None:
        self.module.eval()
        score = float(self.evaluate())
        self.module.train()
        self.ctx.log_curve(step, "val_acc", score)
        if score > self.score:
            self.score, self.step = score, step
            self.state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def restore(self) -> None:
        self.module.load_state_dict(self.state)
        self.ctx.log_curve(self.step, "best_val_acc", self.score)


def predict_module(module, encoded: list[dict], cfg: TrainConfig, collate, device, desc: str = "predict", softmax: bool = True,
                   precision: str = "fp32") -> np.ndarray:
    """Class probabilities (raw outputs with softmax=False) for every example, in input order; `precision` as in fit_module."""
    import torch

    module.eval()
    lengths = [token_length(e) for e in encoded]
    batches = length_buckets(lengths, cfg.eval_batch_size, np.random.default_rng(0), shuffle=False)
    out: list[np.ndarray | None] = [None] * len(encoded)
    with torch.inference_mode():
        for idx in tqdm(batches, desc=desc, unit="batch", leave=False, disable=progress_disabled()):
            inputs = {k: v.to(device) for k, v in collate([encoded[i] for i in idx]).items()}
            with autocast(device, precision):
                outputs = module(**inputs)
            outputs = outputs.float()
            probs = (torch.softmax(outputs, dim=-1) if softmax else outputs).cpu().numpy()
            for i, p in zip(idx, probs):
                out[i] = p
    return np.stack(out) if out else np.zeros((0, 2))


def progress_disabled() -> bool:
    return os.environ.get("W2S_PROGRESS", "1") == "0"
