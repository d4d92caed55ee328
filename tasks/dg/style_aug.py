"""Feature-statistics style augmentation between backbone stages: MixStyle and an AdvStyle-like step.

Both treat the per-sample, per-channel mean μ and standard deviation σ of a stage's output map as
its "style" and replace them while training:

  - MixStyle (Zhou et al., ICLR 2021, `mixstyle.py` of KaiyangZhou/mixstyle-release): with
    probability p per batch and stage, x ← (x − μ)/σ · (λσ + (1−λ)σ_π) + (λμ + (1−λ)μ_π), where π is a
    random permutation of the batch and λ ~ Beta(α, α) per sample (α = 0.1, p = 0.5, ε = 1e-6; the
    statistics are detached, as in the reference).
  - AdvStyle-like (after Zhang et al., 2023, single-source DG): one gradient-ascent step on the
    style statistics. A first forward pass runs with zero perturbations δμ, δσ that require grad,
    x ← (x − μ)/σ · (σ + δσ) + (μ + δμ); the clean loss's gradient with respect to them gives the
    ascent direction, and a second pass uses δ = ε · σ · sign(∇δ) (a signed, FGSM-style step whose
    radius is a fraction ε of each channel's own σ, so it does not depend on the loss scale). The
    training loss is the mean of the clean loss and the loss on the re-styled batch; the second
    pass leaves BatchNorm running statistics untouched (see `frozen_norm_statistics`).

Hooks sit on the backbone's stage modules, found through its `feature_info` (the module of each
feature level, relative to `trainable()`). A stage is a level whose output is an NCHW map; a backbone
whose levels all share one stride (plain ViTs: transformer blocks, not stages) or that names no
modules is refused with a UsageError, never silently left unaugmented. The hooks do nothing unless
the hooked module is in training mode, so evaluation and feature extraction are untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from bob.errors import BackboneContractError, UsageError

if TYPE_CHECKING:
    from bob.backbones.base import Backbone

EPS = 1e-6
# A forward hook: (module, its inputs, its output) -> a replacement output, or None to keep it.
ForwardHook = Callable[[nn.Module, tuple[object, ...], object], torch.Tensor | None]


def style_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std of an NCHW map (unbiased variance, as MixStyle's)."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    sig = (x.var(dim=(2, 3), keepdim=True) + EPS).sqrt()
    return mu, sig


def mix_stats(x: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x normalised by its own statistics, re-styled with λ·(μ, σ) + (1 − λ)·(μ, σ)[perm]."""
    mu, sig = style_stats(x)
    mu, sig = mu.detach(), sig.detach()
    normed = (x - mu) / sig
    return normed * (sig * lam + sig[perm] * (1 - lam)) + (mu * lam + mu[perm] * (1 - lam))


def mixstyle(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """MixStyle with random shuffling, λ ~ Beta(α, α) per sample (the caller draws the probability)."""
    b = x.shape[0]
    beta = torch.distributions.Beta(torch.tensor(alpha), torch.tensor(alpha))
    lam = beta.sample((b, 1, 1, 1)).to(x.device, x.dtype)
    return mix_stats(x, lam, torch.randperm(b).to(x.device))


def restyle(x: torch.Tensor, d_mu: torch.Tensor, d_sig: torch.Tensor) -> torch.Tensor:
    """x with its style statistics shifted: (x − μ)/σ · (σ + δσ) + (μ + δμ), statistics detached."""
    mu, sig = style_stats(x)
    mu, sig = mu.detach(), sig.detach()
    return (x - mu) / sig * (sig + d_sig) + (mu + d_mu)


def stage_modules(backbone: Backbone, levels: Sequence[int] | None = None) -> list[tuple[str, nn.Module]]:
    """(name, module) of the stages to hook: `levels` (indices into feature_info), by default every
    stage but the first (the stem) and the last (MixStyle's placement after ResNet's layer1-3)."""
    info = backbone.feature_info
    name = backbone.meta.name
    strides = {level.stride for level in info}
    if len(info) < 2 or len(strides) < 2:
        raise UsageError(
            f"{name} exposes no stages for style_aug: its {len(info)} feature level(s) share "
            f"{'one stride' if info else 'nothing'} ({sorted(strides) or 'none'}), e.g. transformer blocks. "
            "MixStyle/AdvStyle need a hierarchical backbone (CNN stages); use style_aug=none."
        )
    chosen = list(range(1, len(info) - 1)) if levels is None else backbone.resolve_levels(levels)
    if not chosen:
        raise UsageError(f"{name}: no stage left to hook (it has {len(info)} levels); set style_levels.")
    root = backbone.trainable()
    out = []
    for i in chosen:
        module_name = info[i].module
        module = _find(root, module_name) or _find(backbone, module_name)
        if module is None:
            raise UsageError(
                f"{name} exposes no module for feature level {i} ('{module_name}'), so style_aug cannot "
                "hook its stages; use style_aug=none."
            )
        out.append((module_name, module))
    return out


def _find(root: nn.Module, name: str) -> nn.Module | None:
    if not name:
        return None
    try:
        return root.get_submodule(name)
    except AttributeError:
        return None


class StyleHooks:
    """Forward hooks on stage modules that re-style their outputs in training mode.

    `kind` is "mixstyle" or "advstyle". For AdvStyle the hooks follow a small state machine driven by
    `adversarial_loss`: `probe` (identity outputs with grad-tracked zero perturbations), `apply`
    (the ascended perturbations), and `off` otherwise.
    """

    def __init__(
        self,
        stages: list[tuple[str, nn.Module]],
        kind: str,
        p: float = 0.5,
        alpha: float = 0.1,
        eps: float = 0.5,
        expected_channels: dict[str, int] | None = None,
    ) -> None:
        if kind not in ("mixstyle", "advstyle"):
            raise UsageError(f"unknown style augmentation '{kind}'; valid: mixstyle, advstyle.")
        self.stages, self.kind, self.p, self.alpha, self.eps = stages, kind, p, alpha, eps
        self.expected_channels = expected_channels or {}
        self.mode = "off"
        self.deltas: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.signs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in stages]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> StyleHooks:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def _hook(self, name: str) -> ForwardHook:
        def hook(module: nn.Module, _inputs: tuple[object, ...], out: object) -> torch.Tensor | None:
            if not module.training:
                return None
            x = self._check(name, out)
            if self.kind == "mixstyle":
                if torch.rand(()) > self.p:
                    return None
                return mixstyle(x, self.alpha)
            if self.mode == "probe":
                zero = x.new_zeros(x.shape[0], x.shape[1], 1, 1)
                d_mu, d_sig = zero.clone().requires_grad_(True), zero.clone().requires_grad_(True)
                self.deltas[name] = (d_mu, d_sig)
                return restyle(x, d_mu, d_sig)
            if self.mode == "apply":
                s_mu, s_sig = self.signs[name]
                return adversarial_restyle(x, s_mu, s_sig, self.eps)
            return None

        return hook

    def _check(self, name: str, out: object) -> torch.Tensor:
        """The stage's output, which must be an NCHW map (with the channels its level declares)."""
        want = self.expected_channels.get(name)
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or (want is not None and out.shape[1] != want):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise BackboneContractError(
                f"style_aug: stage '{name}' returned {shape}, not an NCHW map"
                + (f" with {want} channels" if want is not None else "")
                + "; its statistics cannot be re-styled. Use style_aug=none for this backbone."
            )
        return out

    def adversarial_loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module
    ) -> torch.Tensor:
        """Mean of the clean loss and the loss after one gradient-ascent step on the style statistics.

        The mean, not the sum: as ε → 0 the step's gradient is the plain one, so the optimizer's
        learning rate means what it means without style augmentation."""
        self.deltas, self.signs = {}, {}
        self.mode = "probe"
        try:
            clean = criterion(model(x), y)
            if not self.deltas:  # eval mode: no hook ran, nothing to perturb
                return clean
            names = list(self.deltas)
            leaves = [t for name in names for t in self.deltas[name]]
            grads = torch.autograd.grad(clean, leaves, retain_graph=True, allow_unused=True)
            self.signs = {
                name: (_sign(grads[2 * j], leaves[2 * j]), _sign(grads[2 * j + 1], leaves[2 * j + 1]))
                for j, name in enumerate(names)
            }
            self.mode = "apply"
            with frozen_norm_statistics(model):
                adv = criterion(model(x), y)
        finally:
            self.mode = "off"
            self.deltas = {}
        return 0.5 * (clean + adv)


@contextmanager
def frozen_norm_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with batch statistics but leave their running statistics alone.

    The adversarially re-styled pass must not pull the running mean/var (what evaluation uses)
    towards perturbed styles: mixing clean and adversarial statistics in one BatchNorm costs clean
    accuracy (Xie et al., AdvProp, CVPR 2020). Momentum 0 keeps them as they are.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum


def adversarial_restyle(x: torch.Tensor, s_mu: torch.Tensor, s_sig: torch.Tensor, eps: float) -> torch.Tensor:
    """x re-styled by the ascent step: δμ = ε·σ·s_μ, δσ = ε·σ·s_σ with s = sign of the gradient."""
    _, sig = style_stats(x)
    scale = eps * sig.detach()
    return restyle(x, scale * s_mu, scale * s_sig)


def _sign(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like).detach() if grad is None else grad.detach().sign()
