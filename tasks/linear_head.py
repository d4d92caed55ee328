"""Batched training of L2-regularised softmax heads on cached features.

K candidate heads (one per regularisation strength λ) are trained together: their weights form one
[K, D, C] tensor, each minibatch is one GEMM for all of them, and because the loss is a sum of K
independent terms and Adam is elementwise, every candidate follows exactly the trajectory it would
follow alone. The objective of candidate k is

    mean cross-entropy + λ_k / 2 · ||W_k||²      (bias not penalised)

on standardised features, which is scikit-learn's `LogisticRegression(C=1 / (λ_k · N))` — the same
convex problem, so results can be checked against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bob.errors import TrainingDivergedError
from bob.progress import Progress


@dataclass
class Standardizer:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Standardizer:
        x64 = x.astype(np.float64)
        mean, std = x64.mean(0), x64.std(0)
        # Relative floor: random-init backbones can emit features of magnitude 1e-9, which are
        # informative; only dimensions that are constant relative to the others are left unscaled.
        floor = 1e-6 * std.max() if std.max() > 0 else 1.0
        std = np.where(std <= floor, 1.0, std)
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


@dataclass
class HeadConfig:
    epochs: int = 30
    min_steps: int = 1000
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train one head per λ on (x, y) together. Returns W [K, D, C] and b [K, C]."""
    n, d = x.shape
    k = len(lambdas)
    lam = torch.tensor(lambdas, dtype=x.dtype, device=x.device)[:, None, None]
    weight = torch.zeros(k, d, num_classes, device=x.device, dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(k, num_classes, device=x.device, dtype=x.dtype, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=cfg.lr)
    epochs = epochs_for(n, cfg)
    total = epochs * math.ceil(n / cfg.batch_size)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    step = 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            xb, yb = x[idx], y[idx]
            for group in optimizer.param_groups:  # cosine decay to zero, no warm-up
                group["lr"] = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
            logits = torch.einsum("bd,kdc->kbc", xb, weight) + bias[:, None, :]
            ce = F.cross_entropy(logits.reshape(-1, num_classes), yb.repeat(k), reduction="sum") / len(idx)
            loss = ce + 0.5 * (lam * weight.square()).sum()
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"linear head training diverged at step {step}/{total} (loss={loss.item()}); "
                    "the features may contain extreme values, or the learning rate is too high (task arg lr)."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        if progress is not None:
            progress.advance(1)
    return weight.detach(), bias.detach()


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
