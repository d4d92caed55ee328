"""Batched training of L2-regularised softmax heads on cached features.

K candidate heads (one per regularisation strength λ) are trained together: their weights are the
column blocks of one [D, K·C] matrix, each minibatch is one matrix product for all of them, and
because the loss is a sum of K independent terms and Adam is elementwise, every candidate follows
exactly the trajectory it would follow alone. The objective of candidate k is

    mean cross-entropy + λ_k / 2 · ||W_k||²      (bias not penalised)

on standardised features, which is scikit-learn's `LogisticRegression(C=1 / (λ_k · N))` — the same
convex problem, so results can be checked against it. With `loss="sigmoid"` the targets are
multi-hot [N, C] and cross-entropy becomes the per-class binary cross-entropy summed over classes:
C independent one-vs-rest logistic regressions with the same coefficient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from bob.errors import TrainingDivergedError
from bob.progress import Progress


@dataclass
class Standardizer:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        mean, std = x.mean(0, dtype=np.float64), x.std(0, dtype=np.float64)  # float64 accumulation
        # Relative floor: random-init backbones can emit features of magnitude 1e-9, which are
        # informative; only dimensions that are constant relative to the others are left unscaled.
        floor = 1e-6 * std.max() if std.max() > 0 else 1.0
        std = np.where(std <= floor, 1.0, std)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


@dataclass
class HeadConfig:
    epochs: int = 10
    min_steps: int = 250
    lr: float = 1e-2
    batch_size: int = 256


def fit_heads(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    lambdas: list[float],
    cfg: HeadConfig,
    seed: int,
    progress: Progress | None = None,
    loss: str = "softmax",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one head per λ on (x, y) together. Returns W [K, D, C] and b [K, C].

    All heads live in one [D, K·C] matrix, so a minibatch costs one matrix product for every head.
    `loss` is "softmax" (y: class indices [N]) or "sigmoid" (y: multi-hot float targets [N, C]).
    """
    grad_fn = {"softmax": _softmax_regression_grad, "sigmoid": _sigmoid_regression_grad}[loss]
    n, d = x.shape
    k, c = len(lambdas), num_classes
    # Per-column L2 coefficients: candidate k owns columns k·C … (k+1)·C − 1.
    lam = torch.tensor(lambdas, dtype=x.dtype, device=x.device).repeat_interleave(c)
    weight = torch.zeros(d, k * c, device=x.device, dtype=x.dtype)
    bias = torch.zeros(k * c, device=x.device, dtype=x.dtype)
    weight.grad, bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)
    optimizer = torch.optim.Adam([weight, bias], lr=cfg.lr, **_fused(x.device))
    epochs = epochs_for(n, cfg)
    total = epochs * math.ceil(n / cfg.batch_size)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            for group in optimizer.param_groups:  # cosine decay to zero, no warm-up
                group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            grad_fn(xb, yb, weight, bias, lam, k, c)
            optimizer.step()
            step += 1
        # Checked once per epoch: a per-step check would force a device sync on every step.
        if not bool(torch.isfinite(weight).all()):
            raise TrainingDivergedError(
                f"linear head training diverged in epoch {epoch + 1}/{epochs} (non-finite weights); "
                "the features may contain extreme values, or the learning rate is too high (task arg lr)."
            )
        if progress is not None:
            progress.advance(1)
    w = weight.view(d, k, c).permute(1, 0, 2).contiguous()
    return w, bias.view(k, c)


def _softmax_regression_grad(
    xb: torch.Tensor,
    yb: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    lam: torch.Tensor,
    k: int,
    c: int,
) -> None:
    """Write the gradient of every candidate's objective into `weight.grad` / `bias.grad`.

    For softmax cross-entropy the gradient w.r.t. the logits is (softmax − one-hot) / B; written out
    directly it costs a fraction of an autograd pass, which dominates at these small sizes.
    """
    b = len(yb)
    probs = torch.softmax(torch.addmm(bias, xb, weight).view(b, k, c), dim=-1)
    probs[torch.arange(b, device=yb.device), :, yb] -= 1.0
    dlogits = probs.view(b, k * c)
    torch.mm(xb.T, dlogits, out=weight.grad)
    weight.grad.mul_(1.0 / b).addcmul_(lam, weight)
    torch.sum(dlogits, dim=0, out=bias.grad)
    bias.grad.mul_(1.0 / b)


def _sigmoid_regression_grad(
    xb: torch.Tensor,
    yb: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    lam: torch.Tensor,
    k: int,
    c: int,
) -> None:
    """Like `_softmax_regression_grad` for per-class binary cross-entropy: d/dlogits = (σ(z) − y) / B."""
    b = len(yb)
    dlogits = torch.sigmoid(torch.addmm(bias, xb, weight)).sub_(yb.repeat(1, k))
    torch.mm(xb.T, dlogits, out=weight.grad)
    weight.grad.mul_(1.0 / b).addcmul_(lam, weight)
    torch.sum(dlogits, dim=0, out=bias.grad)
    bias.grad.mul_(1.0 / b)


def _fused(device: torch.device | str) -> dict[str, bool]:
    return {"fused": True} if _has_fused_adam(torch.device(device).type) else {}


@cache
def _has_fused_adam(device_type: str) -> bool:
    """Fused Adam where torch has it for the device type (CPU and CUDA in recent releases)."""
    try:
        torch.optim.Adam([torch.zeros(1, device=device_type, requires_grad=True)], fused=True)
    except (RuntimeError, TypeError):
        return False
    return True


def predict(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Logits [K, N, C] of every head, computed in chunks of rows."""
    outs = [
        torch.einsum("bd,kdc->kbc", x[i : i + chunk], weight) + bias[:, None, :]
        for i in range(0, len(x), chunk)
    ]
    return torch.cat(outs, dim=1)


def epochs_for(n: int, cfg: HeadConfig) -> int:
    """Epochs to run: at least `cfg.epochs`, and enough for `min_steps` updates on small datasets."""
    return max(cfg.epochs, math.ceil(cfg.min_steps / math.ceil(n / cfg.batch_size)))
