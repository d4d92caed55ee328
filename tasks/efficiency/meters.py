"""Peak-memory and energy meters for the efficiency suite; each says how it measured.

Peak memory is what a measured phase adds on top of what was resident when it started (the model's
weights are already loaded):
- GPU: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus the allocation at
  the start (tensors only; the caching allocator's reserve is not counted);
- CPU (Linux): the kernel's resident-set high-water mark `VmHWM` of /proc/self/status, reset at the
  start by writing 5 to /proc/self/clear_refs, minus the resident set `VmRSS` at the start. torch's
  CPU allocations do not go through Python's allocator, so tracemalloc would not see them and
  `getrusage`'s ru_maxrss cannot be reset between phases. Freed heap memory is first handed back
  to the system (glibc `malloc_trim`), else memory kept from an earlier phase would hide this
  phase's growth. Where clear_refs is not writable, a thread samples VmRSS every millisecond
  instead (a lower bound; the method is recorded).

Phases that search a batch size call `restart_peak()` after the search: on a GPU a failed
(out-of-memory) attempt would otherwise set the peak; on CPU the resident high-water mark of the
successful attempts stands (a process that runs out of CPU memory does not survive to report it).

Energy is measured only where a real counter exists: Intel RAPL package counters under
/sys/class/powercap (CPU) or NVML's total-energy counter via pynvml (GPU). Otherwise the meter is a
clearly named proxy, never passed off as joules: process CPU-seconds (all threads) on CPU, device
wall-seconds on GPU.
"""

from __future__ import annotations

import ctypes
import glob
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bob.errors import UsageError

_STATUS = Path("/proc/self/status")
POWERCAP = Path("/sys/class/powercap")
_CLEAR_REFS = Path("/proc/self/clear_refs")
MB = 2**20


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _trim_heap() -> bool:
    """Return freed heap pages to the system (glibc only); True if it could."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def _can_reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """`with PeakMemory(device) as m: ...`, then `m.peak_mb` (None when it cannot be measured)."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = device
        self.is_cuda = getattr(device, "type", str(device)) == "cuda"
        self.method = ""
        self.peak_mb: float | None = None
        self._base = 0
        self._sampled = 0
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated - memory_allocated at start"
        elif not _STATUS.exists():
            self.method = "unavailable: no /proc/self/status on this system"
        elif _can_reset_hwm():
            trimmed = _trim_heap()
            _can_reset_hwm()
            self._base = _status_kb("VmRSS") * 1024
            self.method = "VmHWM (reset via /proc/self/clear_refs) - VmRSS at start" + (
                " (after malloc_trim)" if trimmed else ""
            )
        else:
            self._base = self._sampled = _status_kb("VmRSS") * 1024
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
            self.method = "max VmRSS sampled every 1 ms - VmRSS at start (lower bound)"
        return self

    def restart_peak(self) -> None:
        """Forget the GPU peak so far (the baseline stays); see the module note."""
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def _sample(self) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            self._sampled = max(self._sampled, _status_kb("VmRSS") * 1024)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            assert self._stop is not None
            self._stop.set()
            self._thread.join()
            peak = self._sampled
        elif _STATUS.exists():
            peak = _status_kb("VmHWM") * 1024
        else:
            return
        self.peak_mb = max(0, peak - self._base) / MB


# -------------------------------------------------------------------------------------------- energy


def rapl_counters() -> list[Path]:
    """Readable top-level RAPL package counters (intel-rapl:N, not their sub-zones)."""
    found = []
    for zone in sorted(glob.glob(str(POWERCAP / "intel-rapl:*"))):
        if Path(zone).name.count(":") != 1:
            continue
        counter = Path(zone) / "energy_uj"
        try:
            int(counter.read_text())
        except (OSError, ValueError):
            continue
        found.append(counter)
    return found


def _nvml_available() -> bool:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_energy_backend(requested: str, device: torch.device | str) -> str:
    """The backend to use: `auto` picks a real counter for the device if one exists, else the proxy.
    Asking for a counter that does not exist here is a usage error (before anything is measured)."""
    is_cuda = getattr(device, "type", str(device)) == "cuda"
    if requested == "rapl" and (is_cuda or not rapl_counters()):
        raise UsageError(
            "energy=rapl needs a CPU run and readable /sys/class/powercap/intel-rapl:*/energy_uj; "
            "none is readable here. Use energy=auto (falls back to the labelled proxy) or energy=off."
        )
    if requested == "nvml" and not (is_cuda and _nvml_available()):
        raise UsageError(
            "energy=nvml needs a CUDA device and the pynvml package (pip install pynvml). "
            "Use energy=auto or energy=off."
        )
    if requested != "auto":
        return requested
    if is_cuda and _nvml_available():
        return "nvml"
    if not is_cuda and rapl_counters():
        return "rapl"
    return "proxy"


@dataclass
class EnergyReading:
    backend: str
    value: float | None  # joules for rapl/nvml, seconds for the proxy
    unit: str
    method: str


class EnergyMeter:
    """`with EnergyMeter(backend, device) as e: ...`, then `e.reading`."""

    def __init__(self, backend: str, device: torch.device | str) -> None:
        self.backend = backend
        self.device = device
        self.reading = EnergyReading(backend, None, "", "off")
        self._start: Any = None
        self._on_cpu = getattr(device, "type", str(device)) == "cpu"

    def _read(self) -> Any:
        if self.backend == "rapl":
            return [(int(c.read_text()), _max_range(c)) for c in rapl_counters()]
        if self.backend == "nvml":
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(getattr(self.device, "index", None) or 0)
            return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # millijoules
        if self.backend == "proxy":
            return time.process_time() if self._on_cpu else time.perf_counter()
        return None

    def __enter__(self) -> EnergyMeter:
        self._start = self._read()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._read()
        if self.backend == "rapl":
            uj = sum((e - s) % m if m else e - s for (s, m), (e, _) in zip(self._start, end, strict=True))
            self.reading = EnergyReading("rapl", uj / 1e6, "J", "RAPL package counters (energy_uj)")
        elif self.backend == "nvml":
            self.reading = EnergyReading(
                "nvml", (end - self._start) / 1e3, "J", "NVML nvmlDeviceGetTotalEnergyConsumption"
            )
        elif self.backend == "proxy":
            method = (
                "proxy: process CPU-seconds, all threads (no energy counter)"
                if self._on_cpu
                else "proxy: device wall-seconds (no energy counter)"
            )
            self.reading = EnergyReading("proxy", end - self._start, "s", method)


def _max_range(counter: Path) -> int:
    try:
        return int((counter.parent / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        return 0
