"""Score regressors on frozen IQA features: a small MLP (the nr default) and a ridge-regularised
linear map (the fr default). Both standardise the features with train statistics; the MLP also
z-scores the targets with train statistics and maps its outputs back.

MLP (TOPIQ's optimiser on a head instead of the whole network): Linear(D, hidden) → ReLU →
Dropout → Linear(hidden, 1), AdamW (weight decay 1e-5 as TOPIQ), cosine decay to zero over all
steps, shuffled minibatches from a seeded generator, in the shared training loop
(tasks/common/train_loop.py). Losses, as IQA-PyTorch defines them:
  - `mse`: mean squared error (TOPIQ's KonIQ config);
  - `nin`: norm-in-norm (Li et al. 2020, pyiqa's NiNLoss with p = 1, q = 2);
  - `plcc`: (1 - PLCC of the batch) / 2 (pyiqa's PLCCLoss).
Linear: scikit-learn `Ridge` on standardised features; alpha from `RIDGE_ALPHAS` by grouped k-fold
cross-validation on train (folds never split a scene), the alpha with the best mean fold SRCC
(first one on ties), then refit on all of train.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from sklearn.linear_model import Ridge
from sklearn.model_selection import GroupKFold
from torch import nn

from bob.errors import UsageError
from bob.tasks.common.linear_head import Standardizer
from bob.tasks.common.train_loop import AfterStep, TrainLoop

LOSSES = ("mse", "nin", "plcc")
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 17))


@dataclass
class MLPConfig:
    hidden: int = 256
    dropout: float = 0.1
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-5
    loss: str = "mse"


def _centred_unit(v: torch.Tensor) -> torch.Tensor:
    return F.normalize(v - v.mean(), p=2, dim=0)


def nin_loss(pred: torch.Tensor, target: torch.Tensor, p: float = 1.0, q: float = 2.0) -> torch.Tensor:
    """pyiqa's norm-in-norm loss (p=1, q=2); batches of one fall back to L1 as pyiqa does."""
    n = pred.shape[0]
    if n < 2:
        return F.l1_loss(pred, target)
    scale = 2.0**p * n ** max(0.0, 1.0 - p / q)
    vx = F.normalize(pred - pred.mean(), p=q, dim=0)
    vy = F.normalize(target - target.mean(), p=q, dim=0)
    return torch.norm(vx - vy, p=p) / scale


def plcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if pred.shape[0] < 2:
        return F.l1_loss(pred, target)
    return (1.0 - (_centred_unit(pred) * _centred_unit(target)).sum()) / 2.0


def _loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return {"mse": F.mse_loss, "nin": nin_loss, "plcc": plcc_loss}[name]


def _mlp(width: int, cfg: MLPConfig) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, 1)
    )


def fit_mlp(
    x: np.ndarray, y: np.ndarray, cfg: MLPConfig, seed: int, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Train the MLP on (x, y); returns everything `predict_mlp` needs (CPU tensors and arrays)."""
    torch.manual_seed(seed)
    std = Standardizer.fit(x)
    y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
    xt = torch.as_tensor(std(x), device=device)
    yt = torch.as_tensor((y - y_mean) / y_std, dtype=torch.float32, device=device)
    model = _mlp(x.shape[1], cfg).to(device)
    steps_per_epoch = max(1, len(x) // cfg.batch_size)  # drop the ragged last batch (NiN needs n > 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    loss_fn = _loss_fn(cfg.loss)
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def batches(epoch: int) -> Iterator[torch.Tensor]:
        perm = torch.randperm(len(x), generator=generator).to(device)
        for step in range(steps_per_epoch):
            yield perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        return loss_fn(model(xt[idx]).squeeze(1), yt[idx])

    TrainLoop(
        model,
        opt,
        loss_of,
        batches,
        device=device,
        epochs=cfg.epochs,
        hooks=[AfterStep(lambda _: sched.step())],
        what="the IQA MLP",
        hint=f"lower lr (now {cfg.lr})",
        progress_unit="epochs",
    ).run()
    model.eval()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"kind": "mlp", "state": state, "standardizer": std, "y_mean": y_mean, "y_std": y_std, "cfg": cfg}


def predict_mlp(head: dict[str, Any], x: np.ndarray) -> np.ndarray:
    model = _mlp(x.shape[1], head["cfg"])
    model.load_state_dict(head["state"])
    model.eval()
    with torch.inference_mode():
        out = model(torch.as_tensor(head["standardizer"](x))).squeeze(1).double().numpy()
    return out * head["y_std"] + head["y_mean"]


def select_ridge_alpha(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int) -> tuple[float, list]:
    """Grouped k-fold CV over RIDGE_ALPHAS by mean fold SRCC; returns (alpha, the sweep)."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise UsageError(
            f"Choosing the ridge alpha needs at least 2 scenes in train, got {n_groups}; set ridge_alpha."
        )
    splitter = GroupKFold(n_splits=min(folds, n_groups))
    fold_data = []
    for tr, va in splitter.split(x, y, groups):
        std = Standardizer.fit(x[tr])
        fold_data.append((std(x[tr]), y[tr], std(x[va]), y[va]))
    sweep = []
    for alpha in RIDGE_ALPHAS:
        scores = []
        for xtr, ytr, xva, yva in fold_data:
            pred = Ridge(alpha=alpha).fit(xtr, ytr).predict(xva)
            ok = np.ptp(pred) > 0 and np.ptp(yva) > 0
            scores.append(stats.spearmanr(pred, yva).statistic if ok else 0.0)
        sweep.append({"alpha": alpha, "cv_srcc": float(np.mean(scores))})
    best = max(range(len(sweep)), key=lambda i: sweep[i]["cv_srcc"])
    return RIDGE_ALPHAS[best], sweep


def fit_linear(x: np.ndarray, y: np.ndarray, alpha: float) -> dict[str, Any]:
    std = Standardizer.fit(x)
    model = Ridge(alpha=alpha).fit(std(x), y)
    return {"kind": "linear", "standardizer": std, "coef": model.coef_, "intercept": float(model.intercept_)}


def predict_linear(head: dict[str, Any], x: np.ndarray) -> np.ndarray:
    return head["standardizer"](x).astype(np.float64) @ head["coef"] + head["intercept"]


def head_artifact(head: dict[str, Any]) -> dict[str, Any]:
    """Tensors and plain types only, so it loads with torch.load(weights_only=True)."""
    std: Standardizer = head["standardizer"]
    out: dict[str, Any] = {
        "kind": head["kind"],
        "mean": torch.from_numpy(std.mean),
        "std": torch.from_numpy(std.std),
    }
    if head["kind"] == "mlp":
        out.update(state=head["state"], y_mean=head["y_mean"], y_std=head["y_std"])
    else:
        out.update(coef=torch.from_numpy(np.asarray(head["coef"])), intercept=head["intercept"])
    return out
