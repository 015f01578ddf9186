"""`vos-engine click-eval`: single-frame interactive segmentation, scored as RITM reports it (NoC@85/90, mIoU@k).

On K frames sampled evenly from each sequence, every ground-truth object is segmented from nothing by the engine's
own `Session.click`: the first click at the object's interior-most point, each next one at the interior-most point
of the largest error region (positive on a miss, negative on a false alarm; engine.simulated_user), until the IoU
reaches 0.90 (and at least MIN_CLICKS clicks were made, so mIoU@1..MIN_CLICKS is always defined) or `max_clicks`.
NoC@x is the number of clicks the IoU first reaches x, `max_clicks` when it never does (RITM's convention); means
are over all objects (instances), as RITM's, and per sequence. Each sequence gets a fresh project; the sampled
frames are embedded before the clock starts, so the click time is what a click costs on an embedded frame.

One difference from RITM's clicker: RITM clicks the interior-most point of all false negatives or all false
positives (whichever reaches deeper), this one the interior-most point of the largest connected error region,
the rule `interactive-eval` uses.
"""

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from engine import simulated_user as su
from engine.evaluation import default_session_factory, json_safe, load_sequences, object_ids_of, scale_point
from engine.metrics import jaccard
from engine.upsample import resize_ids

THRESHOLDS = (0.85, 0.90)
MIN_CLICKS = 5  # mIoU is reported after 1..MIN_CLICKS clicks


def sample_frames(n_frames: int, k: int) -> list[int]:
    """k frame indices spread evenly over a sequence of n_frames (each at the middle of its k-th part)."""
    k = min(int(k), n_frames)
    return sorted({int((i + 0.5) * n_frames / k) for i in range(k)})


def noc(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """Clicks until the IoU first reaches `threshold` (ious[i] is the IoU after i + 1 clicks); max_clicks if never."""
    for i, v in enumerate(ious):
        if v >= threshold:
            return i + 1
    return int(max_clicks)


def click_object(session, t: int, gt: np.ndarray, max_clicks: int) -> tuple[list[float], list[float]]:
    """Segment one object of frame t from nothing with simulated clicks: (IoU after each click, seconds per click).

    gt: (H, W) bool ground truth at its own size (the session may work at another size)."""
    obj = session.add_object(name="click-eval").id
    work_shape = session.mask(t).shape
    gt_ids = gt.astype(np.uint8)
    pred = np.zeros_like(gt_ids)
    ious, secs = [], []
    try:
        while len(ious) < max_clicks:
            click = su.first_click(gt_ids, 1, t) if not ious else su.correction_click(pred, gt_ids, [1], t)
            if click is None:  # the mask is exact
                break
            x, y = scale_point(click.x, click.y, gt.shape, work_shape)
            start = time.perf_counter()
            ids = session.click(t, obj, x, y, positive=click.positive)
            secs.append(time.perf_counter() - start)
            pred = resize_ids((ids == obj).astype(np.uint8), (gt.shape[1], gt.shape[0]), smooth=False)
            ious.append(jaccard(pred, gt))
            if ious[-1] >= max(THRESHOLDS) and len(ious) >= MIN_CLICKS:
                break
    finally:
        session.remove_object(obj)  # the next object starts from an empty frame again
    # once exact (or done), the IoU stays where it is for the clicks not made
    ious += [ious[-1] if ious else 0.0] * (MIN_CLICKS - len(ious))
    return ious, secs


def run_click_eval(
    davis_root: str | Path,
    split: str | None = "train",
    sequences: Sequence[str] | None = None,
    frames_per_sequence: int = 3,
    max_clicks: int = 20,
    make_session_fn: Callable[[Path, Path], object] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """The JSON dict of `click-eval`: NoC@85/90, mIoU@1..5 and click time, overall and per sequence.

    progress(done, total) after each sequence."""
    make = make_session_fn or default_session_factory()
    seqs = load_sequences(davis_root, split, sequences)
    per_seq: dict[str, dict] = {}
    everything: list[dict] = []
    all_secs: list[float] = []
    for done, seq in enumerate(seqs, 1):
        samples = []
        with tempfile.TemporaryDirectory(prefix=f"vos-clickeval-{seq.name}-") as tmp:
            session = make(Path(tmp) / "project", seq.image_dir)
            try:
                for t in sample_frames(len(seq), frames_per_sequence):
                    gt_ids = seq.ground_truth(t)
                    session.embedding(t)  # embedded before the clock starts
                    for k in object_ids_of(seq.ground_truth(0)):
                        gt = gt_ids == k
                        if not gt.any():
                            continue  # the object is not on this frame: nothing to click
                        ious, secs = click_object(session, t, gt, max_clicks)
                        all_secs += secs
                        samples.append({"frame": seq.frame_names[t], "object_id": k, "ious": ious,
                                        "click_seconds": float(np.mean(secs)) if secs else None})
            finally:
                session.close()
        per_seq[seq.name] = _summary(samples, max_clicks)
        per_seq[seq.name]["samples"] = samples
        everything += samples
        if progress is not None:
            progress(done, len(seqs))
    out = {"split": split, "n_sequences": len(seqs), "frames_per_sequence": frames_per_sequence,
           "max_clicks": max_clicks}
    out.update(_summary(everything, max_clicks))
    out["click_seconds"] = float(np.mean(all_secs)) if all_secs else None
    out["sequences"] = per_seq
    return json_safe(out)


def _summary(samples: list[dict], max_clicks: int) -> dict:
    """NoC@85/90 (means over objects), how many never reach 0.90, mIoU after 1..MIN_CLICKS clicks."""
    if not samples:
        return {"n_objects": 0}
    out: dict = {"n_objects": len(samples)}
    for th in THRESHOLDS:
        out[f"NoC@{round(th * 100)}"] = float(np.mean([noc(s["ious"], th, max_clicks) for s in samples]))
    out["failed@90"] = sum(1 for s in samples if max(s["ious"]) < max(THRESHOLDS))
    out["mIoU"] = {str(k): float(np.mean([s["ious"][k - 1] for s in samples])) for k in range(1, MIN_CLICKS + 1)}
    return out


def table(result: dict) -> str:
    """Per-sequence text table, then the mean over all objects."""
    head = f"{'sequence':<24}{'objs':>5}{'NoC@85':>8}{'NoC@90':>8}{'fail':>6}" + "".join(
        f"{'IoU@' + str(k):>8}" for k in range(1, MIN_CLICKS + 1))

    def row(name, s):
        if not s.get("n_objects"):
            return f"{name:<24}{0:>5}"
        return (f"{name:<24}{s['n_objects']:>5}{s['NoC@85']:>8.2f}{s['NoC@90']:>8.2f}{s['failed@90']:>6}"
                + "".join(f"{s['mIoU'][str(k)]:>8.3f}" for k in range(1, MIN_CLICKS + 1)))

    lines = [head, "-" * len(head)]
    lines += [row(name[:23], s) for name, s in result["sequences"].items()]
    lines += ["-" * len(head), row("mean over objects", result)]
    if result.get("click_seconds") is not None:
        lines.append(f"click time: {result['click_seconds'] * 1000:.1f} ms (mean over clicks, frame embedded)")
    return "\n".join(lines)
