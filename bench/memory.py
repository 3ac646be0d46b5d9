"""Memory (and power) measured beside a timed loop: NVML on NVIDIA GPUs, the process's RSS on CPUs.

Two sources, never mixed up:

* `NvmlSampler`: a background thread that polls NVML (`nvidia-ml-py`, imported as `pynvml`) for
  the device memory in use (the whole device, every process on it), GPU utilisation and power
  draw. A metric NVML does not support on the device stays NaN; it is never reported as zero.
* `RssMonitor`: the process's resident set size. The peak is the kernel's high-water mark
  (`VmHWM`), reset through `/proc/self/clear_refs` at the start of a measurement where Linux allows
  it ("vmhwm"; no thread runs: the kernel keeps the peak, and a thread waking every 20 ms would
  slow the timed loop on a small CPU); otherwise the peak of RSS sampled by a background thread
  ("sampled", which can miss short spikes). `ru_maxrss` (the peak over the process's whole life)
  is reported beside it. `sampling` says which thread, if any, ran.

`python -m bench.memory` says which of these this machine offers.

`open_nvml()` is the single place that decides whether NVML is used: without an NVIDIA driver
`pynvml.nvmlInit()` raises `pynvml.NVMLError` (`NVMLError_LibraryNotFound`), and the caller gets
`None` and the reason, to say once and fall back to the process's memory.

The framework's own peak (`torch.cuda.max_memory_allocated`) is read by the caller (bench/throughput.py).
"""
from __future__ import annotations

import re
import resource
import sys
import threading
from dataclasses import dataclass, field
from typing import Optional

MIB = float(1 << 20)
NAN = float("nan")

# the columns each source fills; a row always has all of them (NaN where not measured)
NVML_COLUMNS = ("nvml_used_base_mib", "nvml_used_peak_mib", "nvml_gpu_util_mean_pct",
                "nvml_gpu_util_max_pct", "nvml_power_mean_w", "nvml_power_max_w", "nvml_samples")
RSS_COLUMNS = ("rss_base_mib", "rss_peak_mib", "rss_peak_delta_mib", "rss_peak_method",
               "ru_maxrss_mib", "process_threads")


def _pynvml():
    import pynvml  # nvidia-ml-py; imports without a driver, fails at nvmlInit
    return pynvml


def _decode(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass
class NvmlDevice:
    """An initialised NVML handle for one GPU; `close()` shuts NVML down again."""
    handle: object
    index_note: str  # how the handle was matched to the CUDA device
    name: str = ""
    driver: str = ""
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                _pynvml().nvmlShutdown()
            except Exception:  # shutting down must not mask the benchmark's result
                pass


def _cuda_identity(cuda_index: int) -> tuple[Optional[str], Optional[str]]:
    """(NVML UUID 'GPU-...', PCI bus id) of a CUDA device, as far as torch tells them."""
    try:
        import torch
        props = torch.cuda.get_device_properties(cuda_index)
    except Exception:
        return None, None
    uuid = getattr(props, "uuid", None)
    uuid = f"GPU-{uuid}" if uuid is not None and not str(uuid).startswith(("GPU-", "MIG-")) else (
        str(uuid) if uuid is not None else None)
    bus = None
    if all(hasattr(props, a) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id")):
        bus = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    return uuid, bus


def open_nvml(cuda_index: int = 0) -> tuple[Optional[NvmlDevice], str]:
    """(device, reason). device is None when NVML cannot be used; reason says why (or which GPU).

    The CUDA device is matched to NVML by UUID, then PCI bus id, then (with a note, since
    CUDA_VISIBLE_DEVICES and CUDA's ordering can differ from NVML's) by index.
    """
    try:
        pynvml = _pynvml()
    except ImportError as e:
        return None, f"nvidia-ml-py is not installed ({e})"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return None, f"NVML failed to initialise: {e} ({type(e).__name__})"
    try:
        uuid, bus = _cuda_identity(cuda_index)
        handle, note = None, ""
        if uuid:
            try:
                handle, note = pynvml.nvmlDeviceGetHandleByUUID(uuid), f"uuid {uuid}"
            except pynvml.NVMLError:
                handle = None
        if handle is None and bus:
            try:
                handle, note = pynvml.nvmlDeviceGetHandleByPciBusId(bus), f"pci {bus}"
            except pynvml.NVMLError:
                handle = None
        if handle is None:
            handle = pynvml.nvmlDeviceGetHandleByIndex(cuda_index)
            note = f"index {cuda_index} (not matched by UUID/PCI: NVML's order may differ from CUDA's)"
        dev = NvmlDevice(handle, note)
        try:
            dev.name = _decode(pynvml.nvmlDeviceGetName(handle))
        except pynvml.NVMLError:
            pass
        try:
            dev.driver = _decode(pynvml.nvmlSystemGetDriverVersion())
        except pynvml.NVMLError:
            pass
        return dev, f"NVML on {dev.name or 'GPU'} ({note}), driver {dev.driver or 'unknown'}"
    except pynvml.NVMLError as e:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
        return None, f"NVML has no handle for CUDA device {cuda_index}: {e}"


class _Poller:
    """A daemon thread that calls `sample()` every `interval` seconds between start() and stop(),
    and once more at each end, so that even a loop shorter than the interval has samples."""

    def __init__(self, interval: float):
        self.interval = float(interval)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None

    def sample(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except BaseException as e:  # keep the first error; the summary reports what it has
                self.error = e
                return

    def start(self):
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.error is None:
            self.sample()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


class NvmlSampler(_Poller):
    """Polls one NVML device: memory in use (device-wide), GPU utilisation, power.

    A metric whose first query raises `NVMLError` (e.g. `NVMLError_NotSupported` for power on some
    boards) is dropped and its columns stay NaN. `base_used` is the memory in use at start().
    """

    def __init__(self, handle, interval: float = 0.02):
        super().__init__(interval)
        self.handle = handle
        self.used: list[int] = []
        self.util: list[float] = []
        self.power_mw: list[float] = []
        self._supported = {"mem": True, "util": True, "power": True}

    def _query(self, key: str, fn):
        if not self._supported[key]:
            return None
        pynvml = _pynvml()
        try:
            return fn(self.handle)
        except pynvml.NVMLError:
            self._supported[key] = False
            return None

    def sample(self) -> None:
        pynvml = _pynvml()
        mem = self._query("mem", pynvml.nvmlDeviceGetMemoryInfo)
        if mem is not None:
            self.used.append(int(mem.used))
        util = self._query("util", pynvml.nvmlDeviceGetUtilizationRates)
        if util is not None:
            self.util.append(float(util.gpu))
        power = self._query("power", pynvml.nvmlDeviceGetPowerUsage)
        if power is not None:
            self.power_mw.append(float(power))

    def summary(self) -> dict:
        out = dict.fromkeys(NVML_COLUMNS, NAN)
        out["nvml_samples"] = len(self.used)
        if self.used:
            out["nvml_used_base_mib"] = self.used[0] / MIB
            out["nvml_used_peak_mib"] = max(self.used) / MIB
        if self.util:
            out["nvml_gpu_util_mean_pct"] = sum(self.util) / len(self.util)
            out["nvml_gpu_util_max_pct"] = max(self.util)
        if self.power_mw:
            out["nvml_power_mean_w"] = sum(self.power_mw) / len(self.power_mw) / 1000.0
            out["nvml_power_max_w"] = max(self.power_mw) / 1000.0
        return out


# ---------------------------------------------------------------- process memory (CPU fallback)

_STATUS = "/proc/self/status"


def _status_kib(key: str) -> Optional[int]:
    try:
        with open(_STATUS) as f:
            m = re.search(rf"^{key}:\s+(\d+)\s*kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (VmHWM) of this process; False where not possible."""
    if _status_kib("VmHWM") is None:
        return False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def release_free_heap() -> bool:
    """Give the C allocator's free pages back to the OS (glibc `malloc_trim(0)`), so that memory
    freed by an earlier run cannot be reused unseen by the next run's RSS; False where unavailable."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True


_LIBC = None


def current_rss() -> int:
    """Resident set size of this process in bytes."""
    try:
        import psutil
        return int(psutil.Process().memory_info().rss)
    except Exception:
        kib = _status_kib("VmRSS")
        return kib * 1024 if kib is not None else 0


def ru_maxrss_bytes() -> int:
    """Peak RSS over the process's whole life (getrusage; KiB on Linux, bytes on macOS)."""
    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(v if sys.platform == "darwin" else v * 1024)


def process_threads() -> int:
    try:
        import psutil
        return int(psutil.Process().num_threads())
    except Exception:
        return threading.active_count()


class RssMonitor(_Poller):
    """Peak resident memory of this process over one or more start()/stop() blocks.

    Each start() returns the allocator's free heap to the OS (glibc malloc_trim: otherwise memory
    freed by an earlier run is reused without raising RSS) and resets VmHWM where Linux allows it;
    each stop() takes the block's peak from VmHWM ("vmhwm"). Only where the reset fails does a
    thread sample RSS every `interval` seconds ("sampled"). The base is the RSS at the first
    start(); the summary reports the largest block peak and its excess over that base.
    """

    def __init__(self, interval: float = 0.02):
        super().__init__(interval)
        self.base: Optional[int] = None
        self.peak: Optional[int] = None
        self.method = "sampled"
        self._block_max = 0

    def sample(self) -> None:
        self._block_max = max(self._block_max, current_rss())

    def start(self):
        release_free_heap()
        self.method = "vmhwm" if reset_peak_rss() else "sampled"
        rss = current_rss()
        if self.base is None:
            self.base = rss
        self._block_max = rss
        if self.method == "vmhwm":  # the kernel keeps the peak: no thread to wake during the block
            self._stop.clear()
            return self
        return super().start()

    @property
    def sampling(self) -> str:
        """The thread the last block ran beside: 'none' (VmHWM) or 'rss every <interval> s'."""
        return "none" if self.method == "vmhwm" else f"rss every {self.interval:g} s"

    def stop(self) -> None:
        super().stop()
        peak = self._block_max
        if self.method == "vmhwm":
            hwm = _status_kib("VmHWM")
            if hwm is not None:
                peak = max(peak, hwm * 1024)
        self.peak = peak if self.peak is None else max(self.peak, peak)

    def summary(self) -> dict:
        if self.base is None or self.peak is None:
            return empty_rss_summary()
        return {
            "rss_base_mib": self.base / MIB,
            "rss_peak_mib": self.peak / MIB,
            "rss_peak_delta_mib": (self.peak - self.base) / MIB,
            "rss_peak_method": self.method,
            "ru_maxrss_mib": ru_maxrss_bytes() / MIB,
            "process_threads": process_threads(),
        }


def empty_nvml_summary() -> dict:
    return dict.fromkeys(NVML_COLUMNS, NAN)


def empty_rss_summary() -> dict:
    out = dict.fromkeys(RSS_COLUMNS, NAN)
    out["rss_peak_method"] = ""
    return out


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine() or "cpu"


def describe(cuda_index: int = 0) -> list[str]:
    """What this machine offers the benchmarks, one line per source."""
    nvml, why = open_nvml(cuda_index)
    if nvml is not None:
        nvml.close()
    hwm = reset_peak_rss()
    return [
        f"NVML: {'yes' if nvml is not None else 'no'}: {why}",
        "process peak RSS: " + ("VmHWM, reset per block (no sampling thread)" if hwm else
                                "sampled by a thread (VmHWM cannot be reset here)"),
        f"free heap returned before each block (malloc_trim): {'yes' if release_free_heap() else 'no'}",
        f"process RSS now: {current_rss() / MIB:.0f} MiB; CPU: {cpu_name()}",
    ]


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cuda-index", type=int, default=0, help="the CUDA device to match in NVML")
    a = p.parse_args(argv)
    for line in describe(a.cuda_index):
        print(line)
    return 0


__all__ = ["NvmlDevice", "NvmlSampler", "RssMonitor", "open_nvml", "reset_peak_rss", "current_rss",
           "ru_maxrss_bytes", "process_threads", "release_free_heap", "cpu_name", "NVML_COLUMNS", "RSS_COLUMNS",
           "empty_nvml_summary", "empty_rss_summary"]


if __name__ == "__main__":
    sys.exit(main())
