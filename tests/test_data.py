"""Data: deterministic toy sets (cached once), corrupt files skipped and counted or fatal when strict,
missing roots named by config key, the paper-scale layouts (ImageFolder, ADE20K, video CSV)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from dart.data import DataError, SkipLog, build_datasets, collate, toy
from dart.engine.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {"train_size": 12, "val_size": 6}


def test_toy_generation_is_deterministic_and_cached(tmp_path):
    a = toy.generate("classification", str(tmp_path / "a"), seed=3, params=SMALL, progress=False)
    b = toy.generate("classification", str(tmp_path / "b"), seed=3, params=SMALL, progress=False)
    c = toy.generate("classification", str(tmp_path / "c"), seed=4, params=SMALL, progress=False)
    xa, ya, meta = toy.load_split(a, "train")
    xb, yb, _ = toy.load_split(b, "train")
    xc, _, _ = toy.load_split(c, "train")
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb) and not np.array_equal(xa, xc)
    assert xa.shape == (12, 64, 64, 3) and xa.dtype == np.uint8 and meta["classes"][0] == "plus"
    stamp = os.path.getmtime(os.path.join(a, "train_x.npy"))
    toy.generate("classification", a, seed=3, params=SMALL, progress=False)  # cached: not rewritten
    assert os.path.getmtime(os.path.join(a, "train_x.npy")) == stamp


@pytest.mark.parametrize("kind", ["segmentation", "video"])
def test_toy_kinds(tmp_path, kind):
    root = toy.generate(kind, str(tmp_path / kind), seed=0, params=SMALL, progress=False)
    x, y, meta = toy.load_split(root, "val")
    if kind == "segmentation":
        assert x.shape == (6, 64, 64, 3) and y.shape == (6, 64, 64)
        assert 0 < (np.asarray(y) > 0).mean() < 0.5 and np.asarray(y).max() < 5  # small sparse objects
    else:
        assert x.shape == (6, 4, 32, 32, 3) and meta["classes"][0] == "move_right"
        assert (np.asarray(x[:, 0]) != np.asarray(x[:, -1])).any()  # something moves


def _motion_class(clip: np.ndarray) -> int:
    """Class of a translation clip read from the pixels alone: the static background is the per-pixel
    median over frames, the moving glyph is what differs from it, and its centroid's path gives the
    direction (0 right, 1 left, 2 down, 3 up, as toy.VIDEO_CLASSES)."""
    clip = np.asarray(clip, dtype=float)
    moving = (np.abs(clip - np.median(clip, axis=0)).sum(-1) > 0)  # (T, H, W)
    ys, xs = np.mgrid[0:clip.shape[1], 0:clip.shape[2]]
    cy = np.array([ys[m].mean() for m in moving])
    cx = np.array([xs[m].mean() for m in moving])
    dy, dx = cy[-1] - cy[0], cx[-1] - cx[0]
    if abs(dx) > abs(dy):
        return 0 if dx > 0 else 1
    return 2 if dy > 0 else 3


def test_video_class_is_in_the_motion():
    """A clip of 'move right' played backwards is a 'move left' clip (and down/up likewise): same
    frames, other class; so no single frame tells the class."""
    rng = np.random.default_rng(0)
    x, y = toy.make_video(rng, 40, canvas=64, num_classes=4, frames=8)
    assert set(y.tolist()) == {0, 1, 2, 3} and toy.VIDEO_CLASSES[:4] == ["move_right", "move_left", "move_down",
                                                                          "move_up"]
    reverse = {0: 1, 1: 0, 2: 3, 3: 2}
    for clip, label in zip(x, y.tolist()):
        assert _motion_class(clip) == label  # the estimator reads the generator's classes right
        assert _motion_class(clip[::-1]) == reverse[label]  # the reversed clip is the other class
        # ... made of exactly the same frames, so only their order tells the two classes apart
        assert sorted(f.tobytes() for f in clip) == sorted(f.tobytes() for f in clip[::-1])


def test_toy_cli(tmp_path):
    out = tmp_path / "cli"
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "dart.data.toy", "--kind", "classification", "--out", str(out),
                        "--seed", "0", "--set", "train_size=5", "val_size=5"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "meta.json").read_text())["params"]["train_size"] == 5
    assert "toy classification train" in p.stderr  # tqdm progress bar


@pytest.mark.parametrize("setting, error", [(["clutter=0", "glyph=14"], None),
                                            (["train_size=0"], "train_size=0 must be at least 1"),
                                            (["clutter=-1"], "non-negative"),
                                            (["glyph=20"], "canvas=32 is too small for glyph=20")])
def test_toy_cli_settings(tmp_path, setting, error):
    """0 is a setting (no clutter); sizes below 1 and values out of a kind's range are one-line
    errors, before anything is generated."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = tmp_path / "v"
    p = subprocess.run([sys.executable, "-m", "dart.data.toy", "--kind", "video", "--out", str(out),
                        "--set", "train_size=3", "val_size=2", *setting], env=env, capture_output=True,
                       text=True, timeout=120)
    if error is None:
        assert p.returncode == 0, p.stderr
        params = json.loads((out / "meta.json").read_text())["params"]
        assert (params["clutter"], params["glyph"]) == (0, 14)
    else:
        last = p.stderr.strip().splitlines()[-1]  # (after runpy's warning about `-m dart.data.toy`)
        assert p.returncode == 2 and last.startswith("dart.data.toy: ") and error in last
        assert "Traceback" not in p.stderr and not out.exists()


def _imagefolder(root, corrupt=True):
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((40, 48, 3), 60 * i, np.uint8)).save(d / f"{i}.png")
    if corrupt:
        (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        (root / "val" / "cat" / "truncated.png").write_bytes((root / "val" / "cat" / "0.png").read_bytes()[:60])


def _if_cfg(root, *extra):
    return load_config(None, ["data.kind=imagefolder", f"data.root={root}", "data.num_classes=2", "data.img_size=32",
                              *extra])


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    _imagefolder(tmp_path / "imgs")
    train, val, info = build_datasets(_if_cfg(tmp_path / "imgs"))
    assert info["classes"] == ["cat", "dog"] and len(train) == 9 and len(val) == 9
    skips = SkipLog()
    seen = 0
    for ds in (train, val):
        loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)
        for x, y, skipped in loader:
            skips.add(skipped)
            if x is not None:
                assert x.shape[1:] == (3, 32, 32)
                seen += x.shape[0]
    assert sorted(os.path.basename(p) for p in skips.paths) == ["broken.jpg", "truncated.png"]
    assert seen == 9 + 8  # train substitutes the bad sample (fixed batch size); val drops it


def test_strict_fails_fast_naming_the_path(tmp_path):
    _imagefolder(tmp_path / "imgs")
    train, _, _ = build_datasets(_if_cfg(tmp_path / "imgs", "data.strict=true"))
    bad = [i for i in range(len(train)) if train.path(i).endswith("broken.jpg")][0]
    with pytest.raises(DataError, match="broken.jpg"):
        train[bad]


def test_training_run_counts_skipped_files(tmp_path):
    from dart.engine.loop import Trainer
    _imagefolder(tmp_path / "imgs")
    threads = torch.get_num_threads()
    cfg = _if_cfg(tmp_path / "imgs", "model.name=deit_tiny_patch16_224",
                  "model.kwargs={patch_size: 16, embed_dim: 32, depth: 1, num_heads: 2}", "train.epochs=1",
                  "train.batch_size=4", "eval.batch_size=4", "train.threads=1", f"output_dir={tmp_path / 'run'}")
    try:
        m = Trainer(cfg).run()
    finally:
        torch.set_num_threads(threads)
    assert m["skipped_files"] == 2 and m["val_samples"] == 8
    assert any(p.endswith("truncated.png") for p in m["skipped_paths"])
    assert "skipped unreadable file" in (tmp_path / "run" / "train.log").read_text()


def test_missing_root_names_key_and_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"data\.root.*|nowhere") as e:
        build_datasets(_if_cfg(missing))
    assert "data.root" in str(e.value) and str(missing) in str(e.value)
    (tmp_path / "imgs" / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"data\.val_split"):
        build_datasets(_if_cfg(tmp_path / "imgs"))
    with pytest.raises(FileNotFoundError, match=r"data\.root"):
        build_datasets(load_config(None, ["task=segmentation", "data.kind=ade20k", "data.num_classes=150"]))


def test_cli_exit_code_for_missing_root(tmp_path, capsys):
    from dart.train import main
    assert main(["data.kind=imagefolder", f"data.root={tmp_path / 'none'}", f"output_dir={tmp_path / 'r'}"]) == 2
    assert "data.root" in capsys.readouterr().err


def test_ade20k_layout(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for sub in ("training", "validation"):
        (root / "images" / sub).mkdir(parents=True)
        (root / "annotations" / sub).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((30, 40, 3), 100, np.uint8)).save(root / "images" / sub / f"ADE_{i}.jpg")
            ann = np.zeros((30, 40), np.uint8)
            ann[5:15, 5:20] = 3
            Image.fromarray(ann).save(root / "annotations" / sub / f"ADE_{i}.png")
    (root / "images" / "validation" / "ADE_9.jpg").write_bytes(b"junk")
    cfg = load_config(None, ["task=segmentation", "data.kind=ade20k", f"data.root={root}", "data.num_classes=150",
                             "data.img_size=32", "data.train_split=training", "data.val_split=validation"])
    train, val, info = build_datasets(cfg)
    x, mask, _ = train[0]
    assert x.shape == (3, 32, 32) and mask.shape == (32, 32)
    assert set(mask.unique().tolist()) <= {2, 255}  # 0 -> ignore, k -> k-1
    x, y, skipped = collate([val[i] for i in range(len(val))])
    assert x.shape[0] == 2 and [os.path.basename(s.path) for s in skipped] == ["ADE_9.jpg"]
    assert (y == 2).any() and (y == 255).any()


def _write_clip(path, frames=6, size=24, shift=0):
    import av
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=8)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        for t in range(frames):
            img = np.zeros((size, size, 3), np.uint8)
            img[:, (t * 3 + shift) % size] = 255
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_video_csv_decodes_and_skips_bad_clips(tmp_path):
    pytest.importorskip("av")
    root = tmp_path / "clips"
    root.mkdir()
    for i in range(3):
        _write_clip(root / f"c{i}.mp4", shift=i)
    (root / "bad.mp4").write_bytes(b"not a video at all")
    (root / "train.csv").write_text("path,label\nc0.mp4,0\nc1.mp4,1\nbad.mp4,1\nc2.mp4,0\n")
    (root / "val.csv").write_text("c2.mp4,0\nbad.mp4,1\nmissing.mp4,0\n")
    cfg = load_config(None, ["task=video", "data.kind=video_csv", f"data.root={root}", "data.num_classes=2",
                             "data.img_size=16", "data.num_frames=4", "data.crop_pct=1.0"])
    train, val, _ = build_datasets(cfg)
    x, y, skipped = train[2]  # bad.mp4 -> replaced by the next clip
    assert x.shape == (3, 4, 16, 16) and [os.path.basename(s.path) for s in skipped] == ["bad.mp4"]
    x, y, skipped = collate([val[i] for i in range(3)])
    assert x.shape == (1, 3, 4, 16, 16)
    assert sorted(os.path.basename(s.path) for s in skipped) == ["bad.mp4", "missing.mp4"]
    cfg["data"]["strict"] = True
    _, val, _ = build_datasets(cfg)
    with pytest.raises(DataError, match="bad.mp4"):
        val[1]


def _write_textured_clip(path, frames, codec, gop, bframes=None, w=64, h=48):
    """Every frame different (a texture moving 2 px per frame), so a wrong frame cannot pass."""
    import av
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = gop
        if bframes is not None:
            s.codec_context.max_b_frames = bframes
        base = np.random.default_rng(0).integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
        for t in range(frames):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.roll(base, 2 * t, axis=1), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


@pytest.mark.parametrize("codec,gop,bframes", [("mpeg4", 7, 2), ("mpeg4", 100, 0), ("libx264", 10, None)])
def test_read_clip_returns_the_frames_of_full_decoding(tmp_path, codec, gop, bframes):
    """Seeking to keyframes and decoding only the chosen frames gives exactly the frames that
    decoding everything and indexing gives: every sampling mode, keyframes near and far, B-frames."""
    av = pytest.importorskip("av")
    import random
    from dart.data import video
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = tmp_path / "clip.mp4"
    _write_textured_clip(path, 53, codec, gop, bframes)
    full = video.decode_frames(str(path))
    assert len(full) == 53 and not np.array_equal(full[0], full[1])
    for stride in (None, 3, 20):
        for train in (False, True):
            for seed in range(3):
                idx = video.frame_indices(len(full), 8, stride, train, random.Random(seed))
                seen = []
                got = video.read_clip(str(path), lambda n: seen.append(n) or idx)
                assert seen == [len(full)]  # the frame count from the packets is the decoded count
                assert np.array_equal(got, full[idx]), (stride, train, seed)
    for idx in ([52, 0, 52, 26], [5]):  # any order, repeats, the last frame
        assert np.array_equal(video.read_clip(str(path), lambda n: idx), full[idx])


def test_read_clip_without_timestamps_decodes_sequentially(tmp_path, monkeypatch):
    """When the packets cannot index the clip, the sequential fallback gives the same frames."""
    pytest.importorskip("av")
    from dart.data import video
    path = tmp_path / "clip.mp4"
    _write_textured_clip(path, 20, "mpeg4", 5, 2)
    full = video.decode_frames(str(path))

    def unseekable(container, stream):
        raise video._Unseekable("simulated")

    monkeypatch.setattr(video, "_packet_index", unseekable)
    idx = [0, 7, 7, 19]
    assert np.array_equal(video.read_clip(str(path), lambda n: idx), full[idx])
