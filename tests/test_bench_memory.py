"""bench.memory: the NVML sampler against pynvml's real API surface (its calls replaced, no GPU
here) and the process-memory fallback for real."""
from __future__ import annotations

import inspect
import itertools
import math
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

pynvml = pytest.importorskip("pynvml")

from bench import memory as mem  # noqa: E402


def _fake(monkeypatch, name, impl):
    """Replace pynvml.<name> by `impl`, checking every call against the real function's signature
    (so the code under test cannot call NVML with arguments the real binding would refuse)."""
    real = getattr(pynvml, name)  # AttributeError if the API has no such function
    sig = inspect.signature(real)

    def fake(*args, **kwargs):
        sig.bind(*args, **kwargs)
        return impl(*args, **kwargs)

    monkeypatch.setattr(pynvml, name, fake)


def _nvml_error(code):
    return pynvml.NVMLError(code)  # pynvml maps the code to its subclass (NVMLError_NotSupported, ...)


HANDLE = object()


@pytest.fixture
def fake_gpu(monkeypatch):
    """A GPU whose memory in use grows by 1 MiB per query, 40% utilisation, no power reading."""
    calls = {"init": 0, "shutdown": 0}
    used = itertools.count(1000)
    lock = threading.Lock()

    def meminfo(handle, version=None):
        assert handle is HANDLE
        with lock:
            u = next(used)
        return pynvml.c_nvmlMemory_t(total=80_000 << 20, free=(80_000 - u) << 20, used=u << 20)

    def power(handle):
        raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def not_found(*a):
        raise _nvml_error(pynvml.NVML_ERROR_NOT_FOUND)

    _fake(monkeypatch, "nvmlInit", lambda: calls.__setitem__("init", calls["init"] + 1))
    _fake(monkeypatch, "nvmlShutdown", lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1))
    _fake(monkeypatch, "nvmlDeviceGetHandleByUUID", not_found)
    _fake(monkeypatch, "nvmlDeviceGetHandleByPciBusId", not_found)
    _fake(monkeypatch, "nvmlDeviceGetHandleByIndex", lambda i: HANDLE)
    _fake(monkeypatch, "nvmlDeviceGetName", lambda h: "Fake GPU 80GB")
    _fake(monkeypatch, "nvmlSystemGetDriverVersion", lambda: "999.1")
    _fake(monkeypatch, "nvmlDeviceGetMemoryInfo", meminfo)
    _fake(monkeypatch, "nvmlDeviceGetUtilizationRates",
          lambda h: pynvml.c_nvmlUtilization_t(gpu=40, memory=10))
    _fake(monkeypatch, "nvmlDeviceGetPowerUsage", power)
    return calls


def test_open_nvml_with_fake_driver(fake_gpu, monkeypatch):
    monkeypatch.setattr(mem, "_cuda_identity", lambda i: ("GPU-1234", "00000000:3B:00.0"))
    dev, why = mem.open_nvml(0)
    assert dev is not None and dev.handle is HANDLE
    assert dev.name == "Fake GPU 80GB" and dev.driver == "999.1"
    assert "index 0" in dev.index_note  # UUID and PCI lookups failed, so it says it fell back
    assert fake_gpu["init"] == 1
    dev.close()
    dev.close()
    assert fake_gpu["shutdown"] == 1


def test_open_nvml_prefers_uuid(fake_gpu, monkeypatch):
    seen = []
    _fake(monkeypatch, "nvmlDeviceGetHandleByUUID", lambda u: seen.append(u) or HANDLE)
    monkeypatch.setattr(mem, "_cuda_identity", lambda i: ("GPU-1234", None))
    dev, why = mem.open_nvml(3)
    assert seen == ["GPU-1234"] and dev.index_note == "uuid GPU-1234" and "uuid" in why
    dev.close()


def test_sampler_summary(fake_gpu):
    dev, _ = mem.open_nvml(0)
    s = mem.NvmlSampler(dev.handle, interval=0.002)
    with s:
        deadline = time.monotonic() + 2.0
        while len(s.used) < 5 and time.monotonic() < deadline:
            time.sleep(0.002)
    n = len(s.used)
    assert n >= 5 and s.error is None
    out = s.summary()
    assert set(out) == set(mem.NVML_COLUMNS)
    assert out["nvml_samples"] == n
    assert out["nvml_used_base_mib"] == 1000  # the first sample, taken at start()
    assert out["nvml_used_peak_mib"] == 1000 + n - 1
    assert out["nvml_gpu_util_mean_pct"] == 40 and out["nvml_gpu_util_max_pct"] == 40
    # NVML said "not supported" for power: NaN, not zero, and it was asked only once
    assert math.isnan(out["nvml_power_mean_w"]) and math.isnan(out["nvml_power_max_w"])
    assert s.power_mw == [] and s._supported["power"] is False
    # a second block accumulates (interleaved rounds)
    s.start()
    s.stop()
    assert len(s.used) == n + 2 and s.summary()["nvml_used_base_mib"] == 1000
    dev.close()


def test_sampler_power_in_watts(fake_gpu, monkeypatch):
    _fake(monkeypatch, "nvmlDeviceGetPowerUsage", lambda h: 250_000)  # milliwatts
    s = mem.NvmlSampler(HANDLE, interval=0.01)
    s.start()
    s.stop()
    out = s.summary()
    assert out["nvml_power_mean_w"] == 250.0 and out["nvml_power_max_w"] == 250.0


def test_sampler_nothing_supported(fake_gpu, monkeypatch):
    def unsupported(*a, **k):
        raise _nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
    for name in ("nvmlDeviceGetMemoryInfo", "nvmlDeviceGetUtilizationRates"):
        _fake(monkeypatch, name, unsupported)
    s = mem.NvmlSampler(HANDLE, interval=0.01)
    s.start()
    s.stop()
    out = s.summary()
    assert out["nvml_samples"] == 0
    assert all(math.isnan(out[k]) for k in mem.NVML_COLUMNS if k != "nvml_samples")


def test_open_nvml_init_failure_is_reported(monkeypatch):
    def fail():
        raise _nvml_error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    _fake(monkeypatch, "nvmlInit", fail)
    dev, why = mem.open_nvml(0)
    assert dev is None and "NVMLError_LibraryNotFound" in why


def test_open_nvml_for_real_without_driver():
    """On this machine (no NVIDIA driver) NVML cannot start: None and the reason, no exception."""
    dev, why = mem.open_nvml(0)
    if dev is not None:  # a machine with a driver
        dev.close()
        pytest.skip(f"NVML works here: {why}")
    assert "NVML" in why


def test_rss_monitor_for_real():
    m = mem.RssMonitor(interval=0.005)
    with m:
        x = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, touched
        x += 1
        del x
    out = m.summary()
    assert set(out) == set(mem.RSS_COLUMNS)
    assert out["rss_peak_method"] in ("vmhwm", "sampled")
    assert out["rss_base_mib"] > 0 and out["ru_maxrss_mib"] > 0 and out["process_threads"] >= 1
    if out["rss_peak_method"] == "vmhwm":  # the sampled peak may miss a short spike
        assert out["rss_peak_delta_mib"] > 48
        # the same allocation again: the freed heap was returned, so this run's RSS still grows
        again = mem.RssMonitor(interval=0.005)
        with again:
            x = torch.ones(64 << 20, dtype=torch.uint8)
            x += 1
            del x
        if mem.release_free_heap():
            assert again.summary()["rss_peak_delta_mib"] > 48
        # the high-water mark was reset: a quiet block does not report the old peak
        q = mem.RssMonitor(interval=0.005)
        q.start()
        q.stop()
        assert q.summary()["rss_peak_delta_mib"] < 32
    assert out["rss_peak_mib"] >= out["rss_base_mib"]


def test_empty_summaries_are_nan_not_zero():
    assert all(math.isnan(v) for v in mem.empty_nvml_summary().values())
    e = mem.empty_rss_summary()
    assert e.pop("rss_peak_method") == "" and all(math.isnan(v) for v in e.values())


def test_python_m_bench_memory_help_and_report():
    """`python -m bench.memory --help` printed nothing (no entry point); now it describes the module,
    and without arguments says what this machine offers."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "bench.memory", "--help"], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0 and "usage: python -m bench.memory" in r.stdout and "VmHWM" in r.stdout
    r = subprocess.run([sys.executable, "-m", "bench.memory"], capture_output=True, text=True, cwd=root)
    assert r.returncode == 0, r.stderr
    assert [ln.split(":")[0] for ln in r.stdout.splitlines()][:2] == ["NVML", "process peak RSS"]


def test_rss_monitor_runs_no_thread_where_vmhwm_resets(monkeypatch):
    before = {t.name for t in threading.enumerate()}
    m = mem.RssMonitor(interval=0.001)
    m.start()
    during = {t.name for t in threading.enumerate()} - before
    m.stop()
    if m.method == "vmhwm":
        assert during == set() and m.sampling == "none"
    monkeypatch.setattr(mem, "reset_peak_rss", lambda: False)
    m.start()
    during = {t.name for t in threading.enumerate()} - before
    m.stop()
    assert during == {"RssMonitor"} and m.sampling == "rss every 0.001 s" and m.method == "sampled"
