"""Clips/s and peak memory of the video loader's decoding: every frame to RGB then pick
(`decode_frames`, the old loader) against decoding only the picked frames (`read_clip`).

    python -m bench.video_decode --clip long.mp4 --frames 8 --repeats 5
    python -m bench.video_decode --make-clip long.mp4 --seconds 5 --height 720   # an H.264 test clip

Each method runs in its own subprocess, so its peak resident memory (ru_maxrss) is its own; the
two alternate `--rounds` times (interleaved, for a shared machine) and the median is reported.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time

METHODS = ("decode_all", "read_clip")


def make_clip(path: str, seconds: float, height: int, fps: int = 30, gop: int | None = None) -> None:
    """A moving random-block texture, H.264 yuv420p (libx264 defaults: B-frames; keyint 250 unless `gop`)."""
    import av
    import numpy as np
    w = (height * 16 // 9) // 16 * 16
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, height, "yuv420p"
        if gop:
            s.codec_context.gop_size = gop
        base = np.random.default_rng(0).integers(0, 255, (height // 8, w // 8, 3), dtype=np.uint8)
        base = base.repeat(8, 0).repeat(8, 1)
        for t in range(int(seconds * fps)):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.roll(base, 4 * t, axis=1), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def run_one(method: str, clip: str, frames: int, repeats: int) -> dict:
    """Decode `clip` `repeats` times (eval frame choice) with `method`; seconds per clip, peak RSS."""
    from dart.data.video import decode_frames, frame_indices, read_clip
    rng = random.Random(0)
    pick = lambda n: frame_indices(n, frames, None, False, rng)  # noqa: E731
    t0 = time.perf_counter()
    for _ in range(repeats):
        if method == "decode_all":
            all_frames = decode_frames(clip)
            out = all_frames[pick(len(all_frames))]
            del all_frames
        else:
            out = read_clip(clip, pick)
    dt = (time.perf_counter() - t0) / repeats
    assert out.shape[0] == frames
    return {"method": method, "s_per_clip": dt, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.video_decode", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", help="video file to decode")
    p.add_argument("--make-clip", metavar="PATH", help="write an H.264 test clip to PATH and exit")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--gop", type=int, default=None, help="keyframe interval of the made clip (default: libx264's)")
    p.add_argument("--frames", type=int, default=8, help="frames kept per clip (default 8)")
    p.add_argument("--repeats", type=int, default=3, help="decodes per subprocess (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="alternating subprocess rounds (default 3)")
    p.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.make_clip:
        make_clip(a.make_clip, a.seconds, a.height, gop=a.gop)
        return 0
    if not a.clip:
        p.error("--clip (or --make-clip) is required")
    if a.child:
        print(json.dumps(run_one(a.child, a.clip, a.frames, a.repeats)))
        return 0
    results = {m: [] for m in METHODS}
    for _ in range(a.rounds):
        for m in METHODS:
            cmd = [sys.executable, "-m", "bench.video_decode", "--clip", a.clip, "--frames", str(a.frames),
                   "--repeats", str(a.repeats), "--child", m]
            results[m].append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    print(f"{a.clip}: {a.frames} frames per clip, {a.rounds} interleaved rounds x {a.repeats} decodes, medians")
    med = {}
    for m, rs in results.items():
        med[m] = (statistics.median(r["s_per_clip"] for r in rs), statistics.median(r["peak_rss_mib"] for r in rs))
        print(f"  {m:>10}: {1 / med[m][0]:7.2f} clips/s ({med[m][0] * 1000:8.1f} ms/clip), peak RSS {med[m][1]:8.1f} MiB")
    print(f"  read_clip / decode_all: {med['decode_all'][0] / med['read_clip'][0]:.2f}x clips/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
