"""bench.video_decode: what it refuses before decoding, and memory that is the decoding's own."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("av")

from bench import video_decode as vd  # noqa: E402
from tests.cli_checks import one_line_error


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """60 frames (2 s at 30 fps) of 28x16 H.264."""
    path = tmp_path_factory.mktemp("clip") / "c.mp4"
    vd.make_clip(str(path), 2, 16)
    return str(path)


def test_the_clip_is_checked_before_anything_is_decoded(tmp_path, clip, capsys, monkeypatch):
    ran = []
    monkeypatch.setattr(vd, "_child", lambda m, a: ran.append(m))
    assert vd.probe_clip(clip) == (60, "mov,mp4,m4a,3gp,3g2,mj2")
    # more frames than the clip has (was: "1000 frames per clip" of 60 repeated ones)
    assert vd.main(["--clip", clip, "--frames", "1000"]) == 2
    one_line_error(capsys, "bench.video_decode", "has 60 frames", "--frames 1000")
    # a still image (was: "8 frames per clip" of the same picture)
    png = tmp_path / "p.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(png)
    assert vd.main(["--clip", str(png)]) == 2
    one_line_error(capsys, "bench.video_decode", "p.png", "still image")
    # missing, not a video at all
    assert vd.main(["--clip", str(tmp_path / "nope.mp4")]) == 2
    one_line_error(capsys, "bench.video_decode", "nope.mp4", "does not exist")
    (tmp_path / "junk.mp4").write_bytes(b"\0" * 100)
    assert vd.main(["--clip", str(tmp_path / "junk.mp4")]) == 2
    one_line_error(capsys, "bench.video_decode", "junk.mp4")
    assert ran == []


@pytest.mark.parametrize("args, name", [(["--frames", "0"], "--frames"), (["--repeats", "0"], "--repeats"),
                                        (["--rounds", "0"], "--rounds")])
def test_non_positive_counts_are_refused(clip, args, name, capsys):
    with pytest.raises(SystemExit) as e:
        vd.main(["--clip", clip, *args])
    assert e.value.code == 2 and name in capsys.readouterr().err


@pytest.mark.parametrize("args, name", [(["--seconds", "0"], "--seconds"), (["--height", "31"], "--height"),
                                        (["--seconds", "0.01"], "no frame")])
def test_a_clip_that_cannot_be_made_is_refused(tmp_path, args, name, capsys):
    out = tmp_path / "m.mp4"
    try:
        rc = vd.main(["--make-clip", str(out), *args])
    except SystemExit as e:  # argparse's own check
        rc = e.code
    assert rc == 2 and name in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # no clip, no temporary file


def test_make_clip_creates_its_folder_and_writes_atomically(tmp_path):
    out = tmp_path / "new" / "dir" / "c.mp4"
    assert vd.main(["--make-clip", str(out), "--seconds", "0.2", "--height", "16"]) == 0
    assert vd.probe_clip(str(out))[0] == 6 and os.listdir(out.parent) == ["c.mp4"]


def test_peak_memory_is_the_decodings_not_the_imports(clip):
    """ru_maxrss counted the ~700 MiB of torch that every process imports; the decoding of a
    tiny clip needs a few MiB."""
    for method in vd.METHODS:
        r = vd.run_one(method, clip, 8, 1)
        assert r["rss_base_mib"] > 50  # the interpreter and torch, counted apart
        assert 0 <= r["peak_rss_delta_mib"] < min(50, r["rss_base_mib"] / 4), r
        assert r["rss_peak_method"] in ("vmhwm", "sampled")


@pytest.mark.slow
def test_the_benchmark_runs_and_reports_the_clips_frames(clip, capsys):
    assert vd.main(["--clip", clip, "--frames", "8", "--repeats", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "8 of its 60 frames per clip" in out and "decoding peak RSS" in out
