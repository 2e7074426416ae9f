"""Student losses: xent (soft targets), xent_hard (the targets' argmax), logconf (Burns et al. 2023, A.4), product, and EleutherAI/w2s's
entropy, window and kl (w2s/loss.py and w2s/sft.py in github.com/EleutherAI/w2s)."""

from pydantic import Field

from w2s.api import Options
from w2s.hookspecs import hookimpl


def xent_loss(logits, soft_targets, step_frac, options):
    """Cross-entropy against (possibly soft) targets."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, soft_targets)


def xent_hard_loss(logits, soft_targets, step_frac, options):
    """Cross-entropy against each target's most probable class (hard labels, Burns et al.'s hardened-label baseline)."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, soft_targets.argmax(-1))


class LogconfOptions(Options):
    alpha_max: float = Field(default=0.75, ge=0, le=1)
    warmup_frac: float = Field(default=0.2, gt=0, le=1)


def warmup_coef(step_frac: float, options: dict) -> float:
    """alpha rises linearly from 0 to alpha_max over warmup_frac of training, then stays."""
    return options["alpha_max"] * min(1.0, step_frac / options["warmup_frac"])


def logconf_loss(logits, soft_targets, step_frac, options):
    """Auxiliary confidence loss: mix weak targets with the student's own hardened predictions.

    The hardening threshold puts the same share of the batch in class 1 as the weak labels do.
    """
    import torch
    import torch.nn.functional as F

    alpha = warmup_coef(step_frac, options)
    preds = torch.softmax(logits.float(), dim=-1)
    k = preds.shape[1]
    if k == 2:
        prior = soft_targets[:, 1].mean().clamp(0, 1)
        threshold = torch.quantile(preds[:, 1], 1 - prior)
        hard1 = (preds[:, 1] >= threshold).float() if prior > 0 else torch.zeros_like(preds[:, 1])
        hardened = torch.stack([1 - hard1, hard1], dim=1)
    else:
        hardened = F.one_hot(preds.argmax(-1), k).float()
    target = (1 - alpha) * soft_targets + alpha * hardened.detach()
    return F.cross_entropy(logits, target)


class ProductOptions(Options):
    alpha: float = Field(default=1.0, ge=0)
    beta: float = Field(default=1.0, ge=0)
    warmup_frac: float = Field(default=0.1, gt=0, le=1)


def product_loss(logits, soft_targets, step_frac, options):
    """Target proportional to weak^alpha * student^beta (student part warmed up)."""
    import torch
    import torch.nn.functional as F

    beta = options["beta"] * min(1.0, step_frac / options["warmup_frac"])
    preds = torch.softmax(logits.float(), dim=-1).detach()
    target = soft_targets.clamp_min(1e-8) ** options["alpha"] * preds.clamp_min(1e-8) ** beta
    target = target / target.sum(dim=-1, keepdim=True)
    return F.cross_entropy(logits, target)


class EntropyOptions(Options):
    # EleutherAI/w2s LogEntropyLossConfig: logconf_weight = 0.5, logconf_warmup_steps = 100; 100 steps are
    # 0.08 of its default run (n_train 20000, batch_size 32, n_epochs 2: 1250 steps)
    alpha_max: float = Field(default=0.5, ge=0, le=1)
    warmup_frac: float = Field(default=0.08, gt=0, le=1)


def entropy_loss(logits, soft_targets, step_frac, options):
    """Soft auxiliary confidence: (1 - a) * CE(weak, student) + a * H(student), mean over the batch.

    a = alpha_max * min(1, step_frac / warmup_frac) (`warmup_coef`). Definition: EleutherAI/w2s, w2s/sft.py
    runs loss "entropy" as w2s/loss.py's `log_confidence_loss(..., harden=False)`, i.e. cross-entropy to the
    target (1 - a) * weak + a * student_probs, whose value is (1 - a) * CE(weak, student) + a * H(student).
    The reference detaches student_probs, which zeroes the entropy term's gradient (it then trains like a
    (1 - a)-scaled xent); here H(student) keeps its gradient, so the loss does minimise the student's entropy.
    """
    import torch

    alpha = warmup_coef(step_frac, options)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    xent = -(soft_targets * log_probs).sum(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return ((1 - alpha) * xent + alpha * entropy).mean()


class WindowOptions(Options):
    # EleutherAI/w2s ConfidenceWindowLossConfig: radius = 0.15 (its per-dataset "midweak" radius is not offered)
    radius: float = Field(default=0.15, gt=0, le=0.5)


def window_loss(logits, soft_targets, step_frac, options):
    """Cross-entropy to the weak targets on the examples where the *student* is unsure, summed / batch size.

    Kept: max_k softmax(logits)_k < 0.5 + radius (for K > 2, the probability of the student's argmax class).
    loss = sum over kept i of CE(weak_i, student_i) / B, B the whole batch (dropped examples count as 0).
    Definition: EleutherAI/w2s, w2s/loss.py `confidence_window_loss` (default radius 0.15). The mask is not
    differentiated; when no example is kept the loss is a zero with a zero gradient.
    """
    import torch

    log_probs = torch.log_softmax(logits.float(), dim=-1)
    keep = (log_probs.detach().exp().max(dim=-1).values < 0.5 + options["radius"]).float()
    xent = -(soft_targets * log_probs).sum(-1)
    return (keep * xent).sum() / logits.shape[0]


def kl_loss(logits, soft_targets, step_frac, options):
    """KL(weak || student) = sum_k w_k (log w_k - log softmax(logits)_k), mean over the batch, 0 log 0 = 0.

    Definition: EleutherAI/w2s, w2s/loss.py `kl_divergence_loss` (torch kl_div, reduction "batchmean").
    Its gradient equals xent's; the value is 0 when the student matches the weak labels.
    """
    import torch

    targets = soft_targets.float()
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return (torch.xlogy(targets, targets) - targets * log_probs).sum(-1).mean()


@hookimpl
def register_losses(register):
    register("xent", xent_loss)
    register("xent_hard", xent_hard_loss)
    register("logconf", logconf_loss, options=LogconfOptions)
    register("product", product_loss, options=ProductOptions)
    register("entropy", entropy_loss, options=EntropyOptions)
    register("window", window_loss, options=WindowOptions)
    register("kl", kl_loss)
