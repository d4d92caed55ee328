"""Your own backbone: `path/to/file.py:factory`, `my_pkg.module:factory`, or an entry point.

A factory is any callable. It may accept `weights` ("pretrained", "random" or a file path) and any
`--backbone-arg` as keyword arguments, and returns either

  - a `bob.backbones.base.Backbone` (full control: pooled and dense features, metadata), or
  - a plain `nn.Module` plus minimal metadata: `(module, {"input_size": 224, "mean": (…), "std": (…)})`
    (optional keys: `interpolation`, `crop_pct`, `family`, `method`, `data`, `license`).

For a plain module bob takes the pooled feature from its output (global-average-pooled when it is a
map) and finds multi-scale features from its stage outputs with a probe pass; when it has none,
dense suites say so. The factory runs once, when the run resolves the backbone, with torch seeded.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bob.backbones.base import Backbone, BackboneRef
from bob.backbones.catalog import FACTORY
from bob.backbones.families import infer_family
from bob.backbones.meta import FAMILIES, BackboneMeta, DataConfig
from bob.backbones.probe import capture, find_levels
from bob.errors import BackboneContractError, UsageError
from bob.weights import ResolvedWeights, WeightsRequest

_REQUIRED_META = ("input_size", "mean", "std")


def load_factory(spec: str, origin: str = "") -> Callable[..., Any]:
    """Import the callable a factory spec names; every failure names the check that failed."""
    match = FACTORY.match(spec)
    if match is None:
        raise UsageError(
            f"'{spec}' is not a factory: write path/to/file.py:function or package.module:function."
        )
    module_part, attr = match["module"], match["attr"]
    where = f"{origin} " if origin else ""
    try:
        module = (
            _import_file(Path(module_part))
            if module_part.endswith(".py")
            else importlib.import_module(module_part)
        )
    except UsageError:
        raise
    except Exception as err:  # user code: anything can go wrong while importing it
        raise BackboneContractError(
            f"check 'import' failed: {where}{module_part} raised {type(err).__name__}: {err}"
        ) from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise UsageError(
            f"{where}{module_part} has no callable '{attr}'. Callables there: {', '.join(names) or 'none'}."
        )
    return factory


def _import_file(path: Path) -> Any:
    path = path.expanduser()
    if not path.is_file():
        raise UsageError(f"Backbone file {path} does not exist.")
    name = "bob_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


class ModuleBackbone(Backbone):
    """A user's plain nn.Module behind the contract."""

    def __init__(self, module: nn.Module, meta: BackboneMeta, data_config: DataConfig) -> None:
        levels = find_levels(module.eval(), data_config.input_size)
        super().__init__(meta, data_config, levels.info)
        self.module = module
        self._level_modules = levels.modules

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        if isinstance(out, torch.Tensor) and out.ndim == 4:
            return out.mean(dim=(2, 3))
        return out

    def forward_features(self, x: torch.Tensor, levels: Sequence[int] | None = None) -> list[torch.Tensor]:
        if not self.feature_info:
            raise BackboneContractError(
                f"{self.meta.name}: no multi-scale features were found in this module (no block outputs at "
                "strides 2..64). Dense suites need them: return a bob Backbone that implements forward_features."
            )
        indices = self.resolve_levels(levels)
        return capture(self.module, x, [self._level_modules[i] for i in indices])

    def trainable(self) -> nn.Module:
        return self.module


def _call_factory(
    factory: Callable[..., Any], weights: WeightsRequest, args: dict[str, Any], seed: int
) -> Any:
    kwargs = dict(args)
    params = inspect.signature(factory).parameters
    if "weights" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs["weights"] = weights.label
    torch.manual_seed(seed)
    try:
        return factory(**kwargs)
    except Exception as err:
        raise BackboneContractError(
            f"check 'factory' failed: the factory raised {type(err).__name__}: {err}"
        ) from err


def _wrap(out: Any, name: str) -> Backbone:
    if isinstance(out, Backbone):
        return out
    module, meta = (out[0], out[1]) if isinstance(out, tuple) and len(out) == 2 else (out, None)
    if not isinstance(module, nn.Module) or not isinstance(meta, dict):
        raise BackboneContractError(
            f"check 'factory' failed: {name} returned {type(out).__name__}; expected a bob Backbone, or a tuple "
            "(nn.Module, {'input_size': …, 'mean': (…), 'std': (…)})."
        )
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise BackboneContractError(f"check 'factory' failed: {name}'s metadata lacks {', '.join(missing)}.")
    cfg = DataConfig(
        int(meta["input_size"]),
        tuple(float(v) for v in meta["mean"]),
        tuple(float(v) for v in meta["std"]),
        meta.get("interpolation", "bilinear"),
        float(meta.get("crop_pct", 0.875)),
    )
    family = meta.get("family") or infer_family(type(module).__name__.lower())
    if family not in FAMILIES:
        raise BackboneContractError(
            f"check 'factory' failed: family '{family}' is not one of {', '.join(FAMILIES)}."
        )
    module.eval()
    with torch.no_grad():
        probe = module(torch.zeros(1, 3, cfg.input_size, cfg.input_size))
    info = BackboneMeta(
        name=name,
        resolved_name=name,
        adapter="user",
        family=family,
        method=meta.get("method", "unknown"),
        pretrain_data=meta.get("data"),
        params=sum(p.numel() for p in module.parameters()),
        pooled_dim=int(probe.shape[1]) if isinstance(probe, torch.Tensor) and probe.ndim >= 2 else None,
        license=meta.get("license"),
        architecture=type(module).__name__,
    )
    return ModuleBackbone(module, info, cfg)


def _state_fingerprint(model: nn.Module) -> str:
    """sha256 over the model's state: user weights have no file of record, so their bytes are the identity."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def resolve(
    name: str, weights: WeightsRequest, args: dict[str, Any], seed: int, catalog: dict[str, Any] | None = None
) -> BackboneRef:
    """Call the factory (once) and return a reference whose builder hands out the built backbone.

    `name` is the factory spec; for entry points, `catalog` carries the entry point's name.
    """
    origin = f"entry point '{catalog['entry_point']}' ({catalog.get('distribution')}):" if catalog else ""
    backbone = _wrap(_call_factory(load_factory(name, origin), weights, args, seed), name)
    resolved = ResolvedWeights(
        weights.kind,
        source=f"factory:{name}",
        path=str(weights.path) if weights.path else None,
        sha256=_state_fingerprint(backbone),
        verified="state-dict",
        seed=seed if weights.kind == "random" else None,
    )
    backbone.meta.weights = resolved.to_dict()
    return BackboneRef(
        name=name,
        resolved_name=name,
        adapter="user",
        weights=resolved,
        data_config=backbone.data_config,
        args=dict(args),
        builder=lambda _ref, _size: backbone,
    )
