"""Two-hot reward encoding in symlog space (TD-MPC2 / DreamerV3).

`num_bins > 1`: the head outputs logits over bins spaced on [vmin, vmax] in symlog space.
`num_bins <= 1`: the head outputs one scalar, the symlog of the reward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def bin_values(num_bins: int, vmin: float, vmax: float, device=None) -> torch.Tensor:
    return torch.linspace(vmin, vmax, num_bins, device=device)


def two_hot(x: torch.Tensor, num_bins: int, vmin: float, vmax: float) -> torch.Tensor:
    """Scalars (..., 1) → two-hot targets (..., num_bins) over symlog(x)."""
    if num_bins <= 1:
        return symlog(x)
    x = symlog(x).clamp(vmin, vmax).squeeze(-1)
    bin_size = (vmax - vmin) / (num_bins - 1)
    pos = (x - vmin) / bin_size
    lo = pos.floor().clamp(0, num_bins - 1)
    frac = (pos - lo).unsqueeze(-1)
    lo = lo.long().unsqueeze(-1)
    hi = (lo + 1).clamp(max=num_bins - 1)
    out = torch.zeros(*x.shape, num_bins, device=x.device, dtype=x.dtype)
    out.scatter_add_(-1, lo, 1 - frac)
    out.scatter_add_(-1, hi, frac)
    return out


def two_hot_inv(logits: torch.Tensor, num_bins: int, vmin: float, vmax: float) -> torch.Tensor:
    """Logits (..., num_bins) → expected scalar (..., 1); differentiable w.r.t. the logits."""
    if num_bins <= 1:
        return symexp(logits)
    probs = F.softmax(logits, dim=-1)
    x = (probs * bin_values(num_bins, vmin, vmax, logits.device)).sum(-1, keepdim=True)
    return symexp(x)


def reward_loss(pred: torch.Tensor, target: torch.Tensor, num_bins: int, vmin: float, vmax: float) -> torch.Tensor:
    """Per-element reward loss (...,): soft cross-entropy on two-hot targets, or symlog MSE.

    Never MSE between logits and a scalar: with a zero-initialised last layer every logit stays
    equal and the actor gets no ∂r/∂z (DESIGN.md rule 5)."""
    if num_bins <= 1:
        return (pred - symlog(target)).pow(2).squeeze(-1)
    return -(two_hot(target, num_bins, vmin, vmax) * F.log_softmax(pred, dim=-1)).sum(-1)
