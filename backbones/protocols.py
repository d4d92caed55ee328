"""How a task's `protocol` reaches the backbone it runs.

A suite with a `protocol` task arg (`default` | `bob`, see `bob.tasks.common.args`) calls
`with_protocol(ref, protocol)` on its resolved backbone before it reads features or builds a model. The
adapter decides what the protocol changes for its family, as backbone args plus the transform:

- `diffusion` (Stable Diffusion, `bob` recipe): BoB's classifier recipe, GroupNorm on the UNet mid-block
  output then the global average (1280-d), ImageNet mean/std at 256 px, the VAE posterior sampled in
  training and its mode at evaluation (`diffusion_backbone.py`);
- `hf` (MiDaS v3.1 DPT-SwinV2): the timm SwinV2 model BoB built, from MiDaS' own release checkpoint,
  with its final norm, ImageNet mean/std, and its 1000-d head as `native_classifier()` (BoB's retrieval
  descriptor) (`hf_backbone.py`);
- every other adapter: unchanged (their BoB knobs are the task's: transforms, recipes).

What a protocol changes is a backbone arg (`protocol=bob`), so it enters the run's backbone identity and
every feature-cache key, and only when it is not `default`: keys computed before protocols existed stay
what they were. The same arg can be given by hand (`--backbone-arg protocol=bob`).
"""

from __future__ import annotations

from importlib import import_module

from bob.backbones.base import BackboneRef
from bob.backbones.catalog import ADAPTERS
from bob.errors import UsageError

PROTOCOLS = ("default", "bob")


def with_protocol(ref: BackboneRef, protocol: str) -> BackboneRef:
    """`ref` as `protocol` runs it: the same ref for `default` and for adapters with no protocol knobs."""
    if protocol not in PROTOCOLS:
        raise UsageError(f"protocol must be one of {', '.join(PROTOCOLS)}; got '{protocol}'.")
    if protocol == "default" or ref.adapter not in ADAPTERS:
        return ref
    hook = getattr(import_module(ADAPTERS[ref.adapter]), "protocol_ref", None)
    return ref if hook is None else hook(ref, protocol)  # no hook: its features ignore the protocol
