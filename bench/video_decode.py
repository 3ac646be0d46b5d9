"""Clips/s and peak memory of the video loader's decoding: every frame to RGB then pick
(`decode_frames`, the old loader) against decoding only the picked frames (`read_clip`).

    python -m bench.video_decode --clip long.mp4 --frames 8 --repeats 5
    python -m bench.video_decode --make-clip long.mp4 --seconds 5 --height 720   # an H.264 test clip

Each method runs in its own subprocess; the two alternate `--rounds` times (interleaved, for a
shared machine) and the median is reported. Memory is the decoding's own: the peak resident memory
while the subprocess decodes, above its resident memory just before (`bench.memory.RssMonitor`:
VmHWM reset after the imports where Linux allows it, else sampled), so the few hundred MiB of
torch and PyAV that every process imports are not counted; that starting RSS is printed beside it.

Refused before anything is timed (exit 2, one line): a clip that is missing, unreadable, a still
image or shorter than `--frames`; a non-positive --frames, --repeats, --rounds, --seconds; a
--height libx264 cannot encode (odd, or under 16); an output that cannot be written.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

from dart.engine.cli import check_writable, positive_float, positive_int, user_error

METHODS = ("decode_all", "read_clip")
PROG = "bench.video_decode"


def _encodable_height(text: str) -> int:
    v = positive_int(text)
    if v < 16 or v % 2:  # yuv420p halves the chroma planes: libx264 refuses odd sizes
        raise argparse.ArgumentTypeError(f"{text!r} must be an even number of at least 16 (H.264 yuv420p)")
    return v


def make_clip(path: str, seconds: float, height: int, fps: int = 30, gop: int | None = None) -> None:
    """A moving random-block texture, H.264 yuv420p (libx264 defaults: B-frames; keyint 250 unless
    `gop`), written atomically (a temporary file beside `path`, then renamed)."""
    import av
    import numpy as np
    n = int(seconds * fps)
    if n < 1:
        raise ValueError(f"--seconds {seconds:g} gives no frame at {fps} fps")
    w = (height * 16 // 9) // 16 * 16
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=d)
    os.close(fd)
    try:
        with av.open(tmp, "w") as c:
            s = c.add_stream("libx264", rate=fps)
            s.width, s.height, s.pix_fmt = w, height, "yuv420p"
            if gop:
                s.codec_context.gop_size = gop
            base = np.random.default_rng(0).integers(0, 255, (height // 8, w // 8, 3), dtype=np.uint8)
            base = base.repeat(8, 0).repeat(8, 1)
            for t in range(n):
                for pkt in s.encode(av.VideoFrame.from_ndarray(np.roll(base, 4 * t, axis=1), format="rgb24")):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        from dart.engine.checkpoint import normal_mode
        normal_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def probe_clip(path: str) -> tuple[int, str]:
    """(frames, container format) of a video file, decoding it once; a ValueError names what makes
    it unusable here: missing, unreadable, no video stream, a still image, no decodable frame."""
    import av
    if not os.path.isfile(path):
        raise ValueError(f"clip {path} does not exist")
    try:
        with av.open(path) as c:
            fmt = c.format.name
            if not c.streams.video:
                raise ValueError(f"{path} has no video stream")
            # FFmpeg reads a single picture through an image demuxer ('png_pipe', 'image2', ...)
            if fmt == "image2" or fmt.endswith("_pipe"):
                raise ValueError(f"{path} is a still image ({fmt}), not a video")
            n = sum(1 for _ in c.decode(video=0))
    except (av.error.FFmpegError, OSError) as e:
        raise ValueError(f"cannot read clip {path}: {e}") from e
    if n == 0:
        raise ValueError(f"clip {path} has no decodable frame")
    return n, fmt


def run_one(method: str, clip: str, frames: int, repeats: int) -> dict:
    """Decode `clip` `repeats` times (eval frame choice) with `method`: seconds per clip, and the
    decoding's peak RSS above the RSS before it (after the imports)."""
    from dart.data.video import decode_frames, frame_indices, read_clip
    from . import memory as mem
    rng = random.Random(0)
    pick = lambda n: frame_indices(n, frames, None, False, rng)  # noqa: E731
    rss = mem.RssMonitor()
    rss.start()
    t0 = time.perf_counter()
    try:
        for _ in range(repeats):
            if method == "decode_all":
                all_frames = decode_frames(clip)
                out = all_frames[pick(len(all_frames))]
                del all_frames
            else:
                out = read_clip(clip, pick)
        dt = (time.perf_counter() - t0) / repeats
    finally:
        rss.stop()
    if out.shape[0] != frames:
        raise RuntimeError(f"{method} returned {out.shape[0]} frames, not {frames}")
    m = rss.summary()
    return {"method": method, "s_per_clip": dt, "peak_rss_delta_mib": m["rss_peak_delta_mib"],
            "rss_base_mib": m["rss_base_mib"], "rss_peak_method": m["rss_peak_method"]}


def _child(method: str, a) -> dict:
    cmd = [sys.executable, "-m", "bench.video_decode", "--clip", a.clip, "--frames", str(a.frames),
           "--repeats", str(a.repeats), "--child", method]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        raise RuntimeError(f"the {method} subprocess failed (exit {p.returncode}): "
                           f"{lines[-1] if lines else 'no message'}")
    return json.loads(p.stdout)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.video_decode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", help="video file to decode")
    p.add_argument("--make-clip", metavar="PATH", help="write an H.264 test clip to PATH and exit")
    p.add_argument("--seconds", type=positive_float, default=5.0, help="length of the made clip")
    p.add_argument("--height", type=_encodable_height, default=720, help="height of the made clip")
    p.add_argument("--gop", type=positive_int, default=None,
                   help="keyframe interval of the made clip (default: libx264's)")
    p.add_argument("--frames", type=positive_int, default=8, help="frames kept per clip (default 8)")
    p.add_argument("--repeats", type=positive_int, default=3, help="decodes per subprocess (default 3)")
    p.add_argument("--rounds", type=positive_int, default=3, help="alternating subprocess rounds (default 3)")
    p.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:  # inside a subprocess: the parent has checked the clip
        print(json.dumps(run_one(a.child, a.clip, a.frames, a.repeats)))
        return 0
    if a.make_clip:
        try:
            check_writable(a.make_clip, "--make-clip")
            make_clip(a.make_clip, a.seconds, a.height, gop=a.gop)
        except ValueError as e:
            return user_error(PROG, e)
        except Exception as e:  # noqa: BLE001 - PyAV's errors (e.g. a container it cannot write)
            return user_error(PROG, f"--make-clip {a.make_clip}: {type(e).__name__}: {e}")
        print(a.make_clip)
        return 0
    if not a.clip:
        return user_error(PROG, "--clip (or --make-clip) is required")
    try:
        n, _ = probe_clip(a.clip)
    except ValueError as e:
        return user_error(PROG, e)
    if a.frames > n:
        return user_error(PROG, f"clip {a.clip} has {n} frames: --frames {a.frames} would repeat frames "
                                f"(at most {n})")
    results = {m: [] for m in METHODS}
    try:
        for _ in range(a.rounds):
            for m in METHODS:
                results[m].append(_child(m, a))
    except RuntimeError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    print(f"{a.clip}: {a.frames} of its {n} frames per clip, {a.rounds} interleaved rounds x "
          f"{a.repeats} decodes, medians; memory: the decoding's peak RSS above the process's RSS "
          f"before it ({results['read_clip'][0]['rss_peak_method']})")
    med = {}
    for m, rs in results.items():
        med[m] = (statistics.median(r["s_per_clip"] for r in rs),
                  statistics.median(r["peak_rss_delta_mib"] for r in rs),
                  statistics.median(r["rss_base_mib"] for r in rs))
        print(f"  {m:>10}: {1 / med[m][0]:7.2f} clips/s ({med[m][0] * 1000:8.1f} ms/clip), decoding "
              f"peak RSS {med[m][1]:8.1f} MiB (process at start {med[m][2]:.0f} MiB)")
    print(f"  read_clip / decode_all: {med['decode_all'][0] / med['read_clip'][0]:.2f}x clips/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
