"""TD-MPC2 building blocks: NormedLinear (Linear → LayerNorm → act), SimNorm, Mish, mlp()."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def simnorm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over consecutive groups of `dim` entries of the last dimension."""
    shape = x.shape
    x = x.reshape(*shape[:-1], -1, dim)
    if not x.is_cpu:
        return F.softmax(x, dim=-1).reshape(shape)
    # torch's CPU softmax over a last dim of 8 is ~8x slower than over a strided one
    # (docs/results.md#speed); same values to float rounding
    return F.softmax(x.transpose(-1, -2), dim=-2).transpose(-1, -2).reshape(shape)


class SimNorm(nn.Module):
    """Simplicial normalisation: softmax over consecutive groups of `dim` entries."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return simnorm(x, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Mish(nn.Module):
    """Mish, x·tanh(softplus(x)). On CPU as that composition: torch's fused CPU kernel is ~3x
    slower forward + backward (torch 2.13, docs/results.md#speed); elsewhere the fused one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tanh(F.softplus(x)) if x.is_cpu else F.mish(x)


class NormedLinear(nn.Linear):
    """Linear layer followed by LayerNorm and an activation (Mish by default)."""

    def __init__(self, in_features: int, out_features: int, act: nn.Module | None = None, dropout: float = 0.0):
        super().__init__(in_features, out_features)
        self.ln = nn.LayerNorm(out_features)
        self.act = act if act is not None else Mish()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.dropout is not None:
            x = self.dropout(x)
        return self.act(self.ln(x))


def mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    last_act: nn.Module | None = None,
    dropout: float = 0.0,
) -> nn.Sequential:
    """Hidden NormedLinear (Mish) layers; the last layer is NormedLinear with `last_act`
    (e.g. SimNorm) when given, else a plain Linear (unconstrained output)."""
    dims = [in_dim, *hidden]
    layers: list[nn.Module] = [
        NormedLinear(dims[i], dims[i + 1], dropout=dropout if i == 0 else 0.0) for i in range(len(hidden))
    ]
    layers.append(NormedLinear(dims[-1], out_dim, act=last_act) if last_act is not None else nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


def weight_init(m: nn.Module) -> None:
    """TD-MPC2 initialisation: truncated normal (std 0.02) weights, zero biases."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.uniform_(m.weight, -0.02, 0.02)
