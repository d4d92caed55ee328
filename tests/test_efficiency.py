"""efficiency/<size>: counts against timm and hand counts, the batch searches, meters, bad input, runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bob.backbones import resolve_backbone
from bob.backbones.catalog import load_index
from bob.data import dataset_info, load_split
from bob.errors import UsageError
from bob.leaderboard import load_results
from bob.runner import RunOptions, execute
from bob.spec import make_spec
from bob.suites import task_names
from bob.tasks.common.cost import count_macs
from bob.tasks.efficiency.measure import (
    count_params,
    halving_batch,
    largest_fitting_batch,
    memory_access,
    time_calls,
)
from bob.tasks.efficiency.meters import PeakMemory, rapl_counters, resolve_energy_backend

TINY = {"warmup": "1", "iters": "3", "max_batch": "4", "throughput_iters": "2", "train_batch": "4"}


def _run(results_dir, cache_dir, backbone="timm/resnet18", task="efficiency/64", **args):
    spec = make_spec(backbone, task, "random", 0, None, {**TINY, **args})
    options = RunOptions(results_dir, cache_dir, device="cpu", num_workers=0)
    return execute(spec, options).result


# ------------------------------------------------------------------------------------------- counts


@pytest.mark.parametrize(
    "arch", ["resnet18", "mobilenetv3_small_050", "vit_tiny_patch16_224", "convnext_atto"]
)
def test_params_equal_timm_and_the_backbone_index(arch):
    import timm

    backbone = resolve_backbone(f"timm/{arch}", "random").build()
    expected = sum(p.numel() for p in timm.create_model(arch, num_classes=0).parameters())
    assert count_params(backbone) == expected == load_index("timm")["architectures"][arch]["params"]
    assert backbone.meta.params == expected


class _HandNet(nn.Module):
    """conv 3→8 k3 s1 p1 on 10×10 → GAP → linear 8→5 (with bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_macs_of_a_hand_built_net_equal_the_hand_count():
    net = _HandNet().eval()
    conv = 10 * 10 * 8 * (3 * 3 * 3)  # output positions × output channels × kernel volume
    fc = 8 * 5
    assert count_macs(net, torch.randn(1, 3, 10, 10)) == conv + fc
    assert count_macs(net, torch.randn(4, 3, 10, 10)) == 4 * (conv + fc)  # per batch, linear in it
    assert count_params(net) == 3 * 8 * 9 + 8 * 5 + 5
    # VoVNet's memory access cost: conv h·w·(c_in + c_out) + k²·c_in·c_out, linear in + out + weights
    conv_access = 10 * 10 * (3 + 8) + 3 * 3 * 3 * 8
    assert memory_access(net, net, torch.randn(1, 3, 10, 10)) == conv_access + (8 + 5 + 8 * 5)


def test_macs_of_attention_match_the_definition():
    attn = nn.MultiheadAttention(16, 2, batch_first=True).eval()
    x = torch.randn(1, 7, 16)
    n, d = 7, 16
    # in-projection (3 n d²) + scores QKᵀ (n² d) + weighted sum (n² d) + out-projection (n d²)
    expected = 3 * n * d * d + 2 * n * n * d + n * d * d
    assert count_macs(lambda t: attn(t, t, t, need_weights=False), x) == expected


def test_resnet18_at_224_has_torchvisions_published_gmacs():
    backbone = resolve_backbone("timm/resnet18", "random").build().eval()
    macs = count_macs(backbone.forward_pooled, torch.randn(1, 3, 224, 224))
    assert macs == pytest.approx(1.81e9, rel=0.01)  # torchvision's resnet18 card: 1.81 GFLOPS (MACs)


# ---------------------------------------------------------------------------------- batch searches


class _FakeModel:
    """Raises CUDA's out-of-memory message above `limit`, like a card that is full."""

    def __init__(self, limit: int) -> None:
        self.limit, self.calls = limit, []

    def __call__(self, batch: int) -> None:
        self.calls.append(batch)
        if batch > self.limit:
            raise RuntimeError(f"CUDA out of memory. Tried to allocate {batch} GiB")


def test_doubling_search_stops_at_the_first_oom_or_the_cap():
    fake = _FakeModel(limit=11)
    search = largest_fitting_batch(fake, cap=256)
    assert (search.batch, search.tried, search.out_of_memory) == (8, [1, 2, 4, 8, 16], [16])
    assert largest_fitting_batch(_FakeModel(1000), cap=20).batch == 16  # the largest power of two ≤ cap
    assert largest_fitting_batch(_FakeModel(1000), cap=1).tried == [1]


def test_halving_search_halves_until_it_fits():
    fake = _FakeModel(limit=40)
    search = halving_batch(fake, 128)
    assert (search.batch, search.tried, search.out_of_memory) == (32, [128, 64, 32], [128, 64])
    assert halving_batch(_FakeModel(1000), 128).tried == [128]


def test_searches_let_real_errors_and_oom_at_batch_1_through():
    with pytest.raises(RuntimeError, match="out of memory"):
        halving_batch(_FakeModel(0), 8)
    with pytest.raises(RuntimeError, match="out of memory"):
        largest_fitting_batch(_FakeModel(0), 8)

    def broken(batch: int) -> None:
        if batch > 1:
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        largest_fitting_batch(broken, 8)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        halving_batch(broken, 8)


def test_time_calls_times_each_call_after_warmup():
    calls = []
    timing = time_calls(lambda: calls.append(1), warmup=2, iters=5, sync=lambda: None, batch=4)
    assert len(calls) == 7 and len(timing.seconds) == 5
    assert timing.median_ms > 0 and timing.p90_ms >= timing.median_ms
    assert timing.images_per_s == pytest.approx(4 * 5 / sum(timing.seconds))


# ------------------------------------------------------------------------------------------- meters


def test_peak_memory_sees_a_torch_allocation_on_cpu():
    with PeakMemory(torch.device("cpu")) as memory:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB of float32, written so the pages are resident
        del block
    assert memory.method
    if memory.peak_mb is None:
        pytest.skip(f"no memory meter here: {memory.method}")
    assert 48 <= memory.peak_mb <= 256, memory.peak_mb


def test_energy_backend_is_a_real_counter_or_the_labelled_proxy():
    cpu = torch.device("cpu")
    assert resolve_energy_backend("auto", cpu) == ("rapl" if rapl_counters() else "proxy")
    assert resolve_energy_backend("off", cpu) == "off"
    with pytest.raises(UsageError, match="nvml"):
        resolve_energy_backend("nvml", cpu)
    if not rapl_counters():
        with pytest.raises(UsageError, match="powercap"):
            resolve_energy_backend("rapl", cpu)


def test_rapl_energy_sums_packages_and_handles_wraparound(tmp_path, monkeypatch):
    from bob.tasks.efficiency import meters

    for zone, (energy, top) in {"intel-rapl:0": (1000, 5000), "intel-rapl:1": (200, 0)}.items():
        (tmp_path / zone).mkdir()
        (tmp_path / zone / "energy_uj").write_text(str(energy))
        if top:
            (tmp_path / zone / "max_energy_range_uj").write_text(str(top))
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-zone (core): already inside its package
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("7")
    monkeypatch.setattr(meters, "POWERCAP", tmp_path)
    cpu = torch.device("cpu")
    assert [c.parent.name for c in meters.rapl_counters()] == ["intel-rapl:0", "intel-rapl:1"]
    assert resolve_energy_backend("auto", cpu) == "rapl"
    with meters.EnergyMeter("rapl", cpu) as meter:
        (tmp_path / "intel-rapl:0" / "energy_uj").write_text("500")  # wrapped past 5000
        (tmp_path / "intel-rapl:1" / "energy_uj").write_text("1200")
    assert meter.reading.value == pytest.approx((4500 + 1000) / 1e6) and meter.reading.unit == "J"
    with meters.EnergyMeter("proxy", cpu) as proxy:
        sum(i * i for i in range(20000))
    assert (
        proxy.reading.unit == "s" and proxy.reading.value >= 0 and proxy.reading.method.startswith("proxy:")
    )


# ---------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"precision": "fp8"}, "precision must be one of"),
        ({"energy": "joulemeter"}, "energy must be one of"),
        ({"iters": "0"}, "iters must be at least 1"),
        ({"max_batch": "0"}, "max_batch must be at least 1"),
        ({"warmup": "-1"}, "warmup must be 0 or more"),
        ({"threads": "0"}, "threads must be at least 1"),
    ],
)
def test_bad_task_args_are_rejected_before_running(args, message):
    with pytest.raises(UsageError, match=message):
        make_spec("timm/resnet18", "efficiency/64", "random", 0, None, args)


def test_unknown_size_and_listing():
    names = task_names("efficiency/*")
    assert {"efficiency/32", "efficiency/224", "efficiency/384"} <= set(names)
    assert all(dataset_info(n.split("/")[1]).task_type == "input" for n in names)
    assert "random tensors at 224×224, no data" in dataset_info("224").description
    assert not [n for n in task_names() if n.startswith(("linear-probe/224", "knn/64"))]
    with pytest.raises(UsageError, match="Did you mean"):
        make_spec("timm/resnet18", "efficiency/225", "random")
    with pytest.raises(UsageError, match="no images"):
        load_split("224", "test")


def test_fp16_on_cpu_and_a_size_below_the_stride_fail_clearly(results_dir, cache_dir):
    fp16 = _run(results_dir, cache_dir, precision="fp16")
    assert (
        not fp16.ok and fp16.error["user_error"] and "fp16 is not supported on CPU" in fp16.error["message"]
    )
    small = _run(results_dir, cache_dir, task="efficiency/32", image_size="16")
    assert not small.ok and small.error["user_error"]
    assert "smaller than its output stride 32" in small.error["message"]


# --------------------------------------------------------------------------------------- end to end


def test_a_run_records_every_cost_and_the_settings(results_dir, cache_dir):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = _run(results_dir, cache_dir, backbone="timm/mobilenetv3_small_050", threads="1")
        assert torch.get_num_threads() == 2  # the run restores the thread setting it changed
    finally:
        torch.set_num_threads(before)
    assert result.ok, result.error
    m, p = result.metrics, result.protocol
    assert result.main_metric[0] == "latency_ms" and result.task["higher_is_better"] is False
    costs = ("latency_ms", "latency_p90_ms", "throughput_img_s", "train_step_ms", "train_img_s", "gmacs")
    for name in (*costs, "memory_access_m", "gmacs_per_s"):
        assert m[name] > 0 and np.isfinite(m[name]), name
    assert m["latency_p90_ms"] >= m["latency_ms"]
    assert m["params"] == load_index("timm")["architectures"]["mobilenetv3_small_050"]["params"]
    assert (m["throughput_batch"], m["train_batch"]) == (4, 4)  # max_batch / train_batch cap the CPU search
    assert p["throughput"]["tried"] == [1, 2, 4] and p["train_step"]["tried"] == [4]
    assert (p["latency"]["warmup"], p["latency"]["iters"], p["throughput"]["iters"]) == (1, 3, 2)
    assert (p["threads"], p["precision"], p["device"], p["input_size"]) == (1, "fp32", "cpu", 64)
    assert p["macs_counter"] == "torch.utils.flop_counter.FlopCounterMode"
    assert p["macs_counter_torch"] == torch.__version__ and p["weights"] == "random"
    assert p["energy_backend"] in ("rapl", "proxy")
    if p["energy_backend"] == "proxy":  # never passed off as joules
        assert m["energy_proxy_cpu_s_per_img"] > 0 and "energy_j_per_img" not in m
        assert p["energy_method"].startswith("proxy:")
    else:
        assert m["energy_j_per_img"] > 0
    assert p["memory_method"] and m["peak_mem_mb"] >= 0 and m["train_peak_mem_mb"] > 0
    # The result file is a leaderboard row like any other: cost beside the board, not z-scored.
    loaded = load_results(results_dir)
    row = loaded.runs.set_index("task").loc["efficiency/64"]
    assert (row["value"], row["metric:gmacs"]) == (m["latency_ms"], m["gmacs"]) and not loaded.skipped


@pytest.mark.slow
def test_weights_do_not_change_counts_and_bf16_runs(results_dir, cache_dir, weights_dir):
    """torchvision/mobilenet_v2: pretrained and random weights count the same params and MACs."""
    options = RunOptions(results_dir, cache_dir, device="cpu", num_workers=0)
    args = {"warmup": "0", "iters": "1", "max_batch": "1", "throughput_iters": "1", "train": "false"}
    out = {}
    for weights in ("pretrained", "random"):
        spec = make_spec("torchvision/mobilenet_v2", "efficiency/224", weights, 0, None, args)
        out[weights] = execute(spec, options).result
        assert out[weights].ok, out[weights].error
    for name in ("params", "macs"):
        assert out["pretrained"].metrics[name] == out["random"].metrics[name]
    assert out["random"].metrics["gmacs"] == pytest.approx(0.30, rel=0.01)  # torchvision's card: 0.30 GFLOPS
    bf16 = _run(
        results_dir, cache_dir, backbone="timm/resnet18", precision="bf16", train="false", max_batch="1"
    )
    assert bf16.ok and bf16.protocol["autocast"] and bf16.protocol["precision"] == "bf16"
