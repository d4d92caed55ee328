"""What one forward call costs in multiply-accumulates, for the suites that weigh accuracy against
compute (efficiency, tradeoff): one counter, so their MACs agree.

MACs come from torch's own `torch.utils.flop_counter.FlopCounterMode`, which counts matmuls,
convolutions and attention (fvcore's convention: elementwise ops, norms and activations are free)
in FLOPs = 2 × MACs; bob stores MACs = FLOPs / 2. Two blind spots are closed while counting: the
CPU attention kernel gets torch's own sdpa formula, and nn.MultiheadAttention's fused inference
fast path is switched off (it would count as zero). It counts whatever callable it is given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

MACS_COUNTER = "torch.utils.flop_counter.FlopCounterMode"


def _cpu_attention_formulas() -> dict[Any, Callable[..., int]]:
    """FlopCounterMode knows the GPU attention kernels but not the CPU one that
    `F.scaled_dot_product_attention` dispatches to on CPU; count it with torch's own sdpa formula."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None or op in flop_counter.flop_registry:
        return {}

    def flops(
        query_shape: tuple[int, ...],
        key_shape: tuple[int, ...],
        value_shape: tuple[int, ...],
        *args: Any,
        **kwargs: Any,
    ) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    return {op: flops}


@contextlib.contextmanager
def _mha_fastpath_off() -> Iterator[None]:
    """nn.MultiheadAttention's inference fast path is one fused op the counter cannot see into."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    enabled = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(enabled)


def count_macs(fn: Callable[[torch.Tensor], object], x: torch.Tensor) -> int:
    """Multiply-accumulates of one call `fn(x)`, counted by FlopCounterMode (FLOPs / 2), without grads."""
    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas())
    with torch.no_grad(), _mha_fastpath_off(), counter:
        fn(x)
    return int(counter.get_total_flops()) // 2
