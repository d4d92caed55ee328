"""Reading checkpoint files safely and loading them strictly."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import torch

from bob.errors import WeightsError

# Keys under which training scripts commonly nest the model's state dict.
_WRAPPER_KEYS = ("state_dict", "model", "model_state", "module", "teacher")


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict from a .safetensors or torch file, never unpickling arbitrary code."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for unreadable or unsafe files
        raise WeightsError(f"Cannot read checkpoint {path}: {type(err).__name__}: {err}".strip()) from err
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict) and state[key]:
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"Checkpoint {path} does not hold a state dict of tensors.")
    return state


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip holding `constants.pkl` (files of `torch.save` hold none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") for n in archive.namelist())


def torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a TorchScript archive (OpenAI's CLIP and SSCD's releases), which
    `torch.load(weights_only=True)` refuses, as float32 where floating. The archive's code is never
    called: `torch.jit.load` resolves no Python globals and only `state_dict()` is read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; the files are not
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # torch raises several types for unreadable archives
        raise WeightsError(f"Cannot read TorchScript archive {path}: {type(err).__name__}: {err}") from err
    return {k: v.float() if v.is_floating_point() else v for k, v in module.state_dict().items()}


def strict_load(model: torch.nn.Module, state: dict[str, torch.Tensor], source: object) -> None:
    """`load_state_dict(strict=True)` with an error that lists what did not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape-mismatched", mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (f", … ({len(keys)} in all)" if len(keys) > 5 else "")
                parts.append(f"{label} keys: {shown}")
        raise WeightsError(
            f"Checkpoint {source} does not match the architecture ({'; '.join(parts)}). "
            "bob loads checkpoints strictly; convert the file to this architecture's key names first."
        )
    model.load_state_dict(state, strict=True)
