"""Student losses: xent (soft targets), logconf (Burns et al. 2023, A.4) and product."""

from pydantic import Field

from w2s.api import Options
from w2s.hookspecs import hookimpl


def xent_loss(logits, soft_targets, step_frac, options):
    """Cross-entropy against (possibly soft) targets."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, soft_targets)


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


@hookimpl
def register_losses(register):
    register("xent", xent_loss)
    register("logconf", logconf_loss, options=LogconfOptions)
    register("product", product_loss, options=ProductOptions)
