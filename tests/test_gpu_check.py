"""bench.gpu_check: without a GPU it says so and exits 0; its comparisons on the CPU; on a GPU, every path."""
import pytest
import torch

from bench import gpu_check


def test_without_a_gpu_it_says_so_and_exits_0(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.csv"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert "no CUDA device" in capsys.readouterr().out
    assert not out.exists()


def test_scan_comparison_sees_a_wrong_backend(one_thread):
    """The scan check's machinery on the CPU: the same scan agrees with itself, a perturbed one does not."""
    from dart.ops import selective_scan
    ref = gpu_check.fwd_bwd(lambda **kw: selective_scan(**kw, delta_softplus=True, backend="torch"),
                            gpu_check.scan_inputs("cpu", length=64))
    assert set(ref) == {"forward", *(f"grad {k}" for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias"))}
    same = gpu_check.fwd_bwd(lambda **kw: selective_scan(**kw, delta_softplus=True, backend="torch"),
                             gpu_check.scan_inputs("cpu", length=64))
    assert all(r["verdict"] == "pass" for r in gpu_check._compare("scan", "x", same, ref, 1e-6, ""))
    off = gpu_check.fwd_bwd(lambda **kw: selective_scan(**{**kw, "D": kw["D"] * 1.01}, delta_softplus=True,
                                                        backend="torch"), gpu_check.scan_inputs("cpu", length=64))
    verdicts = {r["check"]: r["verdict"] for r in gpu_check._compare("scan", "x", off, ref, 1e-4, "")}
    assert verdicts["x forward"] == "fail" and verdicts["x grad u"] == "fail"


def test_seam_check_sees_a_missing_seam_blend(one_thread, monkeypatch):
    """The seams check's machinery on the CPU: the sampler agrees with itself; without the blend
    of the seam columns it does not (the near-uniform map has seam columns)."""
    from dart.tokenizer import sampling

    def run():
        inputs = gpu_check.seam_inputs("cpu")
        bounds = inputs.pop("bounds")
        return gpu_check.fwd_bwd(lambda images: gpu_check.reference_strip(images, bounds), inputs)

    ref = run()
    assert all(r["verdict"] == "pass" for r in gpu_check._compare("seams", "x", run(), ref, 1e-6, ""))
    grid_of = sampling.sampling_grid
    monkeypatch.setattr(sampling, "sampling_grid", lambda *a, **k: grid_of(*a, **k)._replace(
        seam_weight=grid_of(*a, **k).seam_weight * 0))
    verdicts = {r["check"]: r["verdict"] for r in gpu_check._compare("seams", "x", run(), ref, 1e-4, "")}
    assert verdicts["x forward"] == "fail" and verdicts["x grad images"] == "fail"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_path_on_a_gpu(tmp_path):
    out = tmp_path / "gpu.csv"
    gpu_check.main(["--out", str(out), "--batch-sizes", "1", "8"])
    import csv
    rows = list(csv.DictReader(open(out)))
    assert {r["path"] for r in rows} == {"scan", "conv", "seams", "autocast", "compile", "nvml", "cuda_events", "headline"}
    assert all(r["verdict"] in ("pass", "skip") for r in rows if r["path"] != "headline"), rows


def test_official_step_on_the_cpu(tmp_path, one_thread):
    """--official DIR --imagenet ROOT: skipped (saying what is missing) unless both are there; with a
    made-up darvit-tiny.pth and fake validation images it runs, and its made-up top-1 fails the check."""
    from dart.data.fake import generate
    from dart.engine.official_layout import read_layouts, synthetic_checkpoint
    rows = gpu_check.check_official("cpu", str(tmp_path / "none"), str(tmp_path / "in1k"))
    assert rows[0]["verdict"] == "skip" and "no official checkpoint" in rows[0]["detail"]
    assert "no validation folder" in rows[0]["detail"]
    generate("imagefolder", str(tmp_path / "in1k"), seed=0)
    from pathlib import Path
    layout = read_layouts(Path(__file__).parent / "data" / "official_state_dicts.txt")["darvit_tiny"]
    (tmp_path / "w").mkdir()
    torch.save(synthetic_checkpoint(layout, "darvit_tiny"), tmp_path / "w" / "darvit-tiny.pth")
    rows = gpu_check.check_official("cpu", str(tmp_path / "w"), str(tmp_path / "in1k"), images=4)
    (r,) = rows
    assert r["path"] == "official" and "dart_deit_tiny_patch16_224.official_in1k" in r["check"]
    assert r["limit"].startswith("73.8 +- ") and r["verdict"] == "fail" and "darvit-tiny.pth" in r["detail"]
