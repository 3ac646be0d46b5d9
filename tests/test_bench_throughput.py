"""bench.throughput (and bench.tokenizer_split, bench.plots) on CPU with tiny models."""
from __future__ import annotations

import csv
import math
import os
import threading
import time
import types

import pytest
import torch
import torch.nn as nn

from bench import throughput as tp
from tests.cli_checks import one_line_error

TINY = "deit_tiny_patch16_224:img_size=32,depth=1"
TINY_DART = "dart_deit_tiny_patch16_224:img_size=64,num_tokens=16,scorer=cnn,depth=1"
# one thread: the test machine is shared, and oversubscribed OpenMP threads slow down 100-fold
FAST = ["--warmup-iters", "1", "--min-iters", "2", "--min-time", "0.01", "--no-progress", "--threads", "1"]


def _read(path):
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return r.fieldnames, list(r)


def _opts(**kw):
    base = dict(batch_sizes=[1, 2], warmup_iters=1, min_iters=2, min_time=0.0, sample_interval=0.01,
                threads=1)
    base.update(kw)
    return tp.Options(**base)


class OomAt(nn.Module):
    """Raises the framework's OOM error from `limit` images up, like a GPU that is too small."""

    def __init__(self, limit: int, img: int = 8):
        super().__init__()
        self.limit = limit
        self.fc = nn.Linear(3 * img * img, 4)
        self.pretrained_cfg = {"input_size": (3, img, img)}

    def forward(self, x):
        if x.shape[0] >= self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        return self.fc(x.flatten(1))


def _factory(limits: dict, created: list | None = None):
    def make(spec):
        if created is not None:
            created.append(spec.label)
        if spec.label == "broken":
            raise RuntimeError("no such model (simulated)")
        return OomAt(limits.get(spec.label, 10 ** 9))
    return make


def test_cli_schema_and_cpu_fallback(tmp_path, capsys):
    out = tmp_path / "bench" / "run.csv"
    threads_before = torch.get_num_threads()
    rc = tp.main(["--models", TINY, TINY_DART, "--batch-sizes", "2", "1", "--interleave",
                  "--rounds", "2", "--vs", TINY_DART, TINY, "--out", str(out), *FAST])
    assert rc == 0
    fields, rows = _read(out)
    assert fields == tp.FIELDS
    assert [(r["model"], r["batch_size"]) for r in rows] == [
        (TINY, "1"), (TINY_DART, "1"), (TINY, "2"), (TINY_DART, "2")]
    for r in rows:
        assert r["status"] == "ok" and r["mode"] == "infer" and r["error"] == ""
        assert float(r["images_per_s"]) > 0 and int(r["iters"]) >= 2 and r["rounds"] == "2"
        assert len(r["images_per_s_per_round"].split(";")) == 2
        assert float(r["latency_ms_p10"]) <= float(r["latency_ms_median"]) <= float(r["latency_ms_p90"])
        assert r["device_type"] == "cpu" and r["dtype"] == "float32" and int(r["torch_threads"]) >= 1
        # no NVML without a driver: its columns are empty, never 0; the process's memory instead
        assert r["nvml"] == "no" and all(r[c] == "" for c in tp.mem.NVML_COLUMNS)
        assert r["torch_peak_alloc_mib"] == "" and r["driver"] == "" and r["cuda_version"] == ""
        assert float(r["rss_peak_mib"]) >= float(r["rss_base_mib"]) > 0
        assert r["rss_peak_method"] in ("vmhwm", "sampled") and int(r["process_threads"]) >= 1
    assert [r["tokens"] for r in rows[:2]] == ["4", "16"]
    assert [r["img_size"] for r in rows[:2]] == ["32", "64"]
    assert '"num_tokens": 16' in rows[1]["model_kwargs"]
    assert os.path.exists(out.with_suffix(".png"))
    captured = capsys.readouterr()
    assert f"{TINY_DART} / {TINY}" in captured.out and "batch     1:" in captured.out
    assert "median of 2 per-round ratios" in captured.out
    # the FLOP bound beside each measured ratio, in the output and in <out>.ratios.csv
    from bench.complexity import count
    g_tiny, g_dart = (count(n.split(":")[0], **tp.parse_model_spec(n).kwargs)["gmacs"] for n in (TINY, TINY_DART))
    for r in rows:
        assert float(r["gmacs"]) == pytest.approx(g_tiny if r["model"] == TINY else g_dart, rel=1e-3)  # 6 decimals
    rfields, ratios = _read(tmp_path / "bench" / "run.ratios.csv")
    assert rfields == tp.RATIO_FIELDS and [int(r["batch_size"]) for r in ratios] == [1, 2]
    for r in ratios:
        assert (r["model_a"], r["model_b"]) == (TINY_DART, TINY)
        assert float(r["flop_ratio"]) == pytest.approx(g_tiny / g_dart, rel=1e-5)
        assert float(r["ratio_of_bound"]) == pytest.approx(float(r["ratio"]) / float(r["flop_ratio"]), rel=1e-4)
    assert f"FLOP bound {g_tiny / g_dart:.3f}" in captured.out
    assert "NVML" in captured.err and "torch threads 1" in captured.err
    assert torch.get_num_threads() == threads_before  # --threads does not leak out of the sweep


def test_oom_is_recorded_and_the_sweep_goes_on(tmp_path):
    out = str(tmp_path / "oom.csv")
    specs = [tp.parse_model_spec(s) for s in ("small_gpu", "broken", "big_gpu")]
    rows = tp.run_sweep(specs, _opts(batch_sizes=[8, 1, 2, 4]), out=out,
                        factory=_factory({"small_gpu": 4}), progress=False, log=lambda s: None)
    got = [(r["model"], int(r["batch_size"]), r["status"]) for r in _read(out)[1]]
    assert got == [("small_gpu", 1, "ok"), ("small_gpu", 2, "ok"), ("small_gpu", 4, "oom"),
                   ("broken", 1, "error"), ("broken", 2, "error"), ("broken", 4, "error"),
                   ("broken", 8, "error"),
                   ("big_gpu", 1, "ok"), ("big_gpu", 2, "ok"), ("big_gpu", 4, "ok"), ("big_gpu", 8, "ok")]
    assert len(rows) == len(got)
    oom = next(r for r in rows if r["status"] == "oom")
    assert "OutOfMemoryError" in oom["error"] and math.isnan(oom["images_per_s"])
    assert math.isnan(oom["rss_peak_mib"])  # a failed run claims no measurement
    assert "simulated" in next(r for r in rows if r["model"] == "broken")["error"]


def test_oom_interleaved(tmp_path):
    out = str(tmp_path / "oom_i.csv")
    specs = [tp.parse_model_spec(s) for s in ("a", "b")]
    tp.run_sweep(specs, _opts(batch_sizes=[1, 2, 4], interleave=True, rounds=2), out=out,
                 factory=_factory({"a": 2}), progress=False, log=lambda s: None)
    got = [(r["model"], int(r["batch_size"]), r["status"]) for r in _read(out)[1]]
    assert got == [("a", 1, "ok"), ("b", 1, "ok"), ("a", 2, "oom"), ("b", 2, "ok"), ("b", 4, "ok")]


def test_rows_survive_an_interrupted_sweep(tmp_path):
    out = str(tmp_path / "partial.csv")
    created = []

    def make(spec):
        if spec.label == "killer":
            raise KeyboardInterrupt  # the sweep dies: what was measured before must be on disk
        return _factory({}, created)(spec)

    with pytest.raises(KeyboardInterrupt):
        tp.run_sweep([tp.parse_model_spec("a"), tp.parse_model_spec("killer")], _opts(), out=out,
                     factory=make, progress=False, log=lambda s: None)
    fields, rows = _read(out)
    assert fields == tp.FIELDS and [(r["model"], r["status"]) for r in rows] == [("a", "ok"), ("a", "ok")]
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []  # no temp files left


def test_skip_existing(tmp_path):
    out = str(tmp_path / "resume.csv")
    specs = [tp.parse_model_spec(s) for s in ("a", "b")]
    tp.run_sweep(specs, _opts(batch_sizes=[1, 2]), out=out, factory=_factory({"b": 2}),
                 progress=False, log=lambda s: None)
    created = []
    rows = tp.run_sweep(specs, _opts(batch_sizes=[1, 2, 4]), out=out, skip_existing=True,
                        factory=_factory({"b": 2}, created), progress=False, log=lambda s: None)
    # only a@4 is new; b@4 is not retried since b ran out of memory at 2
    assert created == ["a"]
    assert [(r["model"], int(r["batch_size"])) for r in rows] == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("a", 4)]
    assert len(_read(out)[1]) == 5
    # without --skip-existing the CSV starts afresh
    rows = tp.run_sweep(specs[:1], _opts(batch_sizes=[1]), out=out, factory=_factory({}),
                        progress=False, log=lambda s: None)
    assert len(_read(out)[1]) == 1


def test_train_mode(tmp_path):
    rows = tp.run_sweep([tp.parse_model_spec(TINY)], _opts(batch_sizes=[2], mode="train"),
                        out=str(tmp_path / "t.csv"), progress=False, log=lambda s: None)
    assert rows[0]["status"] == "ok" and rows[0]["mode"] == "train" and rows[0]["images_per_s"] > 0


def test_model_spec_parsing():
    s = tp.parse_model_spec("m:img_size=64,size=[64,64],scorer=cnn,flag=True,x=1.5", {"depth": 1, "img_size": 32})
    assert s.arch == "m" and s.label == "m:img_size=64,size=[64,64],scorer=cnn,flag=True,x=1.5"
    assert s.kwargs == {"depth": 1, "img_size": 64, "size": [64, 64], "scorer": "cnn", "flag": True, "x": 1.5}
    assert tp.parse_model_spec("deit_small_patch16_224").kwargs == {}
    with pytest.raises(ValueError):
        tp.parse_model_spec("m:depth")


def test_is_oom():
    assert tp.is_oom(torch.OutOfMemoryError("x"))
    assert tp.is_oom(torch.cuda.OutOfMemoryError("x"))
    assert tp.is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory"))
    assert not tp.is_oom(RuntimeError("shape mismatch")) and not tp.is_oom(ValueError("out of memory"))


def test_timed_loop_min_iters_and_time():
    lat, wall = tp.timed_loop(lambda: time.sleep(0.001), torch.device("cpu"), min_iters=3, min_time=0.03)
    assert len(lat) >= 3 and wall >= 0.03 and all(v >= 0.001 for v in lat)
    lat, wall = tp.timed_loop(lambda: None, torch.device("cpu"), min_iters=7, min_time=0.0)
    assert len(lat) == 7


def test_ratio_table():
    rows = [dict(model=m, mode="infer", status=s, batch_size=b, images_per_s=v, images_per_s_per_round=pr,
                 gmacs=g)
            for m, b, s, v, pr, g in (
                ("a", 1, "ok", 10.0, "10;10;12", 1.0), ("b", 1, "ok", 5.0, "5;2;6", 4.0),
                ("a", 8, "ok", 40.0, "", 1.0), ("b", 8, "oom", float("nan"), "", 4.0))]
    # per round: 2, 5, 2 -> median 2, although the total ratio is pulled by the slow round of b;
    # FLOP bound: b costs 4x the multiply-adds of a
    assert tp.ratio_table(rows, "a", "b", "infer") == [(1, 10.0, 5.0, 2.0, 2.0, 3, 4.0)]
    (r,) = tp.ratio_rows(rows, [("a", "b")], "infer")
    assert r["flop_ratio"] == 4.0 and r["ratio_of_bound"] == 0.5 and r["gmacs_b"] == 4.0
    rows[1]["images_per_s_per_round"] = "5"  # not interleaved: nothing to pair
    rows[1]["gmacs"] = ""  # not counted (an empty CSV cell)
    (row,) = tp.ratio_table(rows, "a", "b", "infer")
    assert row[:4] == (1, 10.0, 5.0, 2.0) and math.isnan(row[4]) and row[5] == 0 and math.isnan(row[6])


def test_tokenizer_split(tmp_path, monkeypatch):
    from bench import tokenizer_split as ts
    out = str(tmp_path / "split.csv")
    oom_grid = "deit_tiny_patch16_224:img_size=32,depth=2"
    real = ts.create_model

    def create(spec):  # the second grid model runs out of memory while it is built
        if spec.label == oom_grid:
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return real(spec)
    monkeypatch.setattr(ts, "create_model", create)
    rc = ts.main(["--model", "dart_deit_tiny_patch16_224:img_size=64,scorer=cnn,depth=1", "--tokens", "4", "16",
                  "--grid-models", TINY, oom_grid, "--batch-sizes", "2", "--warmup-iters", "1", "--min-iters", "2",
                  "--min-time", "0.005", "--rounds", "1", "--threads", "1", "--out", out,
                  "--baselines", "two-pass", "rev:HEAD"])
    assert rc == 0
    fields, rows = _read(out)
    assert fields == ts.FIELDS
    bad = rows.pop(0)  # a model that fails while it is built is a row with its error, and the rest goes on
    assert (bad["model"], bad["status"]) == (oom_grid, "oom") and "simulated" in bad["error"]
    stages = [(r["tokenizer"], r["num_tokens"], r["stage"]) for r in rows]
    assert stages == [(kind, n, s) for n in ("4", "16") for kind, names in (
        ("dart", ts.STAGES), ("baseline:two-pass", ts.BASELINE_STAGES), ("baseline:rev:HEAD", ts.BASELINE_STAGES))
        for s in names] + [("grid", "4", "patch_embed")]
    assert all(r["status"] == "ok" and float(r["time_ms_median"]) > 0 for r in rows)
    assert all(float(r["share_of_total"]) == 1.0 for r in rows if r["stage"] in ("total", "patch_embed")
               or r["tokenizer"].startswith("baseline") and r["stage"] == "geometry+sampling")
    assert os.path.exists(tmp_path / "split.png")


# ---------------------------------------------------------------- user errors before timing (issue 20)
def _no_timing(monkeypatch, module, name):
    timed = []
    monkeypatch.setattr(module, name, lambda *a, **k: timed.append(1) or [])
    return timed


def test_throughput_misspelt_model_is_exit_2_before_timing(tmp_path, monkeypatch, capsys):
    timed = _no_timing(monkeypatch, tp, "run_sweep")
    out = tmp_path / "t.csv"
    for models in ([TINY, "deit_tiny_patch61_224"], ["deit_tiny_patch61_224"]):
        assert tp.main(["--models", *models, "--out", str(out), *FAST]) == 2
        one_line_error(capsys, "bench.throughput", "deit_tiny_patch61_224", "did you mean deit_tiny_patch16_224")
    # a keyword the model does not take is found before timing too (a meta-device build)
    assert tp.main(["--models", TINY + ",num_token=3", "--out", str(out), *FAST]) == 2
    one_line_error(capsys, "bench.throughput", "num_token")
    assert timed == [] and not out.exists()


def test_split_refuses_a_model_that_is_not_dart(tmp_path, monkeypatch, capsys):
    from bench import tokenizer_split as ts
    timed = _no_timing(monkeypatch, ts, "run")
    out = tmp_path / "s.csv"
    assert ts.main(["--model", TINY, "--tokens", "4", "--grid-models", TINY, "--out", str(out)]) == 2
    one_line_error(capsys, "bench.tokenizer_split", TINY, "not a DART model")
    # a budget the model cannot hold (was: exit 1, nothing said)
    assert ts.main(["--model", TINY_DART, "--tokens", "16", "1000", "--grid-models", "--out", str(out)]) == 2
    one_line_error(capsys, "bench.tokenizer_split", "--tokens 1000", "at most 16")
    assert ts.main(["--model", TINY_DART, "--grid-models", "deit_tiny_patch61_224", "--out", str(out)]) == 2
    one_line_error(capsys, "bench.tokenizer_split", "deit_tiny_patch61_224", "did you mean")
    assert ts.main(["--model", TINY_DART, "--baselines", "twopass", "--out", str(out)]) == 2
    one_line_error(capsys, "bench.tokenizer_split", "twopass")
    assert timed == [] and not out.exists()


def test_split_that_times_nothing_says_why(tmp_path, monkeypatch, capsys):
    from bench import tokenizer_split as ts

    def create(spec):
        raise torch.OutOfMemoryError("out of memory (simulated)")
    monkeypatch.setattr(ts, "create_model", create)
    out = tmp_path / "s.csv"
    assert ts.main(["--model", TINY_DART, "--tokens", "16", "--grid-models", "--out", str(out), "--no-plot",
                    "--batch-sizes", "1", "--threads", "1"]) == 1
    one_line_error(capsys, "bench.tokenizer_split", "nothing was timed ok", "simulated")
    assert _read(out)[1][0]["status"] == "oom"


def test_plots_refuse_a_file_that_is_not_the_benchmarks_csv(tmp_path, capsys):
    from bench import plots
    bad = tmp_path / "bin.csv"
    bad.write_bytes(bytes(range(256)) * 8)
    assert plots.main([str(bad)]) == 2
    one_line_error(capsys, "bench.plots", "bin.csv", "not a bench.throughput CSV")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    assert plots.main([str(other), "--split"]) == 2
    one_line_error(capsys, "bench.plots", "other.csv", "no column tokenizer")
    assert not (tmp_path / "bin.png").exists() and not (tmp_path / "other.png").exists()


# ---------------------------------------------------------------- memory beside the timed loop (issue 20)
class SeesThreads(nn.Module):
    """Records the threads alive at every forward call: the memory samplers among them."""

    def __init__(self, img: int = 8):
        super().__init__()
        self.fc = nn.Linear(3 * img * img, 4)
        self.pretrained_cfg = {"input_size": (3, img, img)}
        self.seen: set[str] = set()

    def forward(self, x):
        self.seen.update(t.name for t in threading.enumerate())
        return self.fc(x.flatten(1))


def _sweep_seeing_threads(tmp_path):
    model = SeesThreads()
    rows = tp.run_sweep([tp.parse_model_spec("m")], _opts(batch_sizes=[2], sample_interval=0.005),
                        out=str(tmp_path / "m.csv"), factory=lambda spec: model, progress=False,
                        log=lambda s: None)
    (row,) = rows
    assert row["status"] == "ok" and "memory_sampling" in _read(tmp_path / "m.csv")[0]
    return row, model.seen


def test_no_memory_thread_runs_beside_the_loop_where_vmhwm_resets(tmp_path):
    if not tp.mem.reset_peak_rss():
        pytest.skip("this kernel does not let VmHWM be reset: the sampling thread is the only way")
    row, seen = _sweep_seeing_threads(tmp_path)
    assert "RssMonitor" not in seen and "NvmlSampler" not in seen
    assert row["memory_sampling"] == "none" and row["rss_peak_method"] == "vmhwm"
    assert row["rss_peak_mib"] >= row["rss_base_mib"] > 0


def test_the_rss_thread_samples_where_vmhwm_cannot_be_reset(tmp_path, monkeypatch):
    monkeypatch.setattr(tp.mem, "reset_peak_rss", lambda: False)
    row, seen = _sweep_seeing_threads(tmp_path)
    assert "RssMonitor" in seen
    assert row["memory_sampling"] == "rss every 0.005 s" and row["rss_peak_method"] == "sampled"
    assert row["rss_peak_mib"] >= row["rss_base_mib"] > 0


class FakeNvml:
    """The few pynvml calls the sampler makes, for a GPU that is not here."""

    class NVMLError(Exception):
        pass

    @staticmethod
    def nvmlDeviceGetMemoryInfo(handle):
        return types.SimpleNamespace(used=3 << 30)

    @staticmethod
    def nvmlDeviceGetUtilizationRates(handle):
        return types.SimpleNamespace(gpu=40.0)

    @staticmethod
    def nvmlDeviceGetPowerUsage(handle):
        return 120_000

    @staticmethod
    def nvmlShutdown():
        pass


def test_the_nvml_thread_keeps_sampling_on_a_gpu(tmp_path, monkeypatch):
    """Device memory has no high-water mark to read: NVML's thread runs beside the timed loop."""
    monkeypatch.setattr(tp.mem, "_pynvml", lambda: FakeNvml)
    monkeypatch.setattr(tp, "open_context", lambda device, use_nvml=True: tp.Context(
        device, "Fake GPU", "999.1", tp.mem.NvmlDevice(object(), "index 0"), "fake NVML"))
    row, seen = _sweep_seeing_threads(tmp_path)
    assert "NvmlSampler" in seen and "RssMonitor" not in seen
    assert row["memory_sampling"] == "nvml every 0.005 s" and row["nvml_samples"] >= 2
    assert row["nvml_used_peak_mib"] == 3072.0
