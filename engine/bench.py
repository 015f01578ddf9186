"""`vos-engine bench`: the speed figures of the whole pipeline at 854x480 on this machine.

    run_bench(video_or_folder=None, json_out=None, refiner=None, long_video=False, frames=60, device="auto") -> dict

Keys: embed_fps (embedding pass, frames/s), propagate_fps (propagation from cached embeddings,
edge-aware upsampling and mask writes included), click_ms (median click -> updated mask of that
frame), peak_rss_mb (peak resident memory of this process), plus the setup (frames, size, threads,
device: where torch embeds, retrieval: where faiss searches). device "cpu" keeps both on the CPU, "cuda"
puts both on the GPU (faiss-gpu needed), "auto" is the product's choice (each on the GPU when it sees one).
long_video=True also runs embed + propagate over a synthetic 3000-frame video and reports
`long_video.rss_mb` sampled along the way, to show memory flat in video length (takes minutes).
Without a video, a synthetic 854x480 clip (a textured ellipse moving over a textured background)
is generated, so the figures never depend on what happens to be on disk.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from engine.atomic import atomic_write_json

SIZE = (854, 480)


def _rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return _peak_rss_mb()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if os.uname().sysname == "Linux" else peak / (1024.0 * 1024.0)


def _ellipse(t: int, size=SIZE) -> np.ndarray:
    w, h = size
    m = np.zeros((h, w), np.uint8)
    cx = int(w * 0.3 + (w * 0.4) * (0.5 - 0.5 * np.cos(t / 25.0)))
    cy = int(h * 0.5 + h * 0.1 * np.sin(t / 17.0))
    cv2.ellipse(m, (cx, cy), (w // 9, h // 5), (t * 2) % 180, 0, 360, 1, -1)
    return m


def synthetic_video(path: Path, n: int, size=SIZE, fps: float = 30.0) -> Path:
    """An MP4 of n frames: a textured ellipse moving over a differently textured background."""
    w, h = size
    rng = np.random.default_rng(0)
    bg = cv2.resize((rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8), (w * 2, h),
                    interpolation=cv2.INTER_CUBIC)
    fg = cv2.resize((rng.random((h // 16, w // 16, 3)) * 120 + 100).astype(np.uint8), (w, h),
                    interpolation=cv2.INTER_NEAREST)
    fg[..., 0] = np.clip(fg[..., 0].astype(int) + 80, 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    try:
        for t in range(n):
            off = (2 * t) % w
            img = bg[:, off:off + w].copy()
            m = _ellipse(t, size).astype(bool)
            img[m] = fg[m]
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def _first_mask(s, video_given: bool) -> np.ndarray:
    """The object to track: the sample's first keyframe mask, else the synthetic ellipse."""
    H, W = s.size_hw
    if not video_given:
        return cv2.resize(_ellipse(0), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool)
    m = np.zeros((H, W), bool)
    cv2.ellipse(m.view(np.uint8), (W // 2, H // 2), (W // 8, H // 5), 0, 0, 360, 1, -1)
    return m


def run_bench(video_or_folder=None, json_out=None, refiner=None, long_video: bool = False,
              frames: int = 60, embedder=None, device: str = "auto") -> dict:
    """Measure the pipeline; see the module doc. ``frames``: clip length used (<= video length)."""
    from engine import retrieval
    from engine.embedding import Embedder

    embedder = embedder or Embedder.load(device=device)
    retrieval.use_gpu({"cpu": False, "cuda": True}.get(device))
    try:
        return _run_bench(video_or_folder, json_out, refiner, long_video, frames, embedder)
    finally:
        retrieval.use_gpu(None)


def _run_bench(video_or_folder, json_out, refiner, long_video: bool, frames: int, embedder) -> dict:
    from engine import retrieval
    from engine.session import Session

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="vos-bench-") as tmp:
        tmp = Path(tmp)
        given = video_or_folder is not None
        video = Path(video_or_folder) if given else synthetic_video(tmp / "synthetic.mp4", frames)
        s = Session.create(tmp / "project", video, short_side=min(SIZE[1], 480), embedder=embedder,
                           refiner=refiner)
        try:
            n = min(frames, len(s.video))
            out.update({"video": str(video) if given else f"synthetic {n} frames",
                        "working_size": list(s.video.working_size), "frames": n,
                        "torch_threads": _torch_threads(), "refiner": refiner or "none",
                        "device": embedder.device.type,
                        "retrieval": "gpu" if retrieval.LabelIndex({}).use_gpu else "cpu"})
            gen = s.embed()  # the embedding pass, as the app runs it (frame 0 first)
            next(gen)  # warm-up (weights, allocator, kernels)
            t0 = time.perf_counter()
            k = 0
            for t in gen:
                k += 1
                if t >= n - 1:
                    break
            gen.close()
            out["embed_fps"] = round(k / (time.perf_counter() - t0), 2)

            obj = s.add_object("bench")
            s.set_object_mask(0, obj.id, _first_mask(s, given))
            gen = s.propagate(0, "forward")
            next(gen)  # warm-up: reference prototypes are built once per propagation
            t0 = time.perf_counter()
            k = 0
            for t, _ in gen:
                k += 1
                if t >= n - 1:
                    break
            gen.close()
            out["propagate_fps"] = round(k / max(time.perf_counter() - t0, 1e-9), 2)

            H, W = s.size_hw
            times = []
            for i, t in enumerate(range(1, n, max(1, n // 12))):
                o = s.add_object(f"click {i}")
                ys, xs = np.nonzero(s.mask(t) == obj.id)
                x, y = (float(xs.mean()), float(ys.mean())) if len(xs) else (W / 2, H / 2)
                c0 = time.perf_counter()
                s.click(t, o.id, x, y, positive=True)
                times.append((time.perf_counter() - c0) * 1000)
                s.remove_object(o.id)
            out["click_ms"] = round(statistics.median(times), 2)
            out["click_ms_max"] = round(max(times), 2)
        finally:
            s.close()
        if refiner:
            from engine.refiners import time_refiner

            out["refiner_ms_per_frame"] = round(time_refiner(refiner), 2)
        out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        if long_video:
            out["long_video"] = _long_video(tmp, embedder=embedder)
            out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    if json_out:
        atomic_write_json(json_out, out)
    return out


def _long_video(tmp: Path, n: int = 3000, embedder=None) -> dict:
    """Embed and propagate a synthetic n-frame video; RSS sampled every 250 frames."""
    from engine.session import Session

    video = synthetic_video(tmp / "long.mp4", n)
    s = Session.create(tmp / "long-project", video, embedder=embedder)
    samples = []
    try:
        t0 = time.perf_counter()
        for t in s.embed():
            if t % 250 == 0:
                samples.append(("embed", t, round(_rss_mb(), 1)))
        embed_s = time.perf_counter() - t0
        obj = s.add_object("long")
        s.set_object_mask(0, obj.id, _first_mask(s, False))
        t0 = time.perf_counter()
        for t, _ in s.propagate(0, "forward"):
            if t % 250 == 0:
                samples.append(("propagate", t, round(_rss_mb(), 1)))
        prop_s = time.perf_counter() - t0
    finally:
        s.close()
    rss = [r for _, _, r in samples]
    return {"frames": n, "embed_seconds": round(embed_s, 1), "propagate_seconds": round(prop_s, 1),
            "rss_mb": samples, "rss_first_mb": rss[0], "rss_last_mb": rss[-1], "rss_max_mb": max(rss),
            "peak_rss_mb": round(_peak_rss_mb(), 1)}


def _torch_threads() -> int:
    try:
        import torch
        return torch.get_num_threads()
    except Exception:  # pragma: no cover
        return 0


if __name__ == "__main__":  # python -m engine.bench [VIDEO]
    import sys
    print(json.dumps(run_bench(sys.argv[1] if len(sys.argv) > 1 else None), indent=2))
