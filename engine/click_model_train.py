"""`vos-engine train --click-model`: train the click network (engine/click_model.py) with simulated clicks, and
the k-fold run (`--folds 5`) that decides whether the engine should use it.

Training follows RITM's iterative scheme on the embedding grid: each sample is a random crop of a frame's grid
(flipped and rescaled), it starts either from nothing with a positive click inside the object (the interior-most
point half of the time, else a random point well inside) or from a corrupted ground-truth mask (dilated, eroded,
cut, shifted, with a stray blob) with a click at its largest error; then 0-3 more clicks, each at the largest
error of the network's own prediction (a no-grad forward), with that prediction as the previous mask. The loss is
binary cross-entropy against the cells' ground-truth fractions, weighted up where the previous mask was wrong,
plus a soft IoU term. One torch thread, seeded numpy/torch generators and arithmetic that does not depend on
where an array lies in memory (engine.distance), so a run repeats bit for bit.

Embeddings come from an embedding cache folder as `vos-engine click-eval --embedding-cache` keeps it (read only,
never written), else the shipped embedder computes them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from engine import simulated_user as su
from engine.atomic import atomic_write_json
from engine.click_model import RESOURCES, ClickModel, ClickNet, features, grid_rgb
from engine.distance import distance_inside
from engine.evaluation import load_sequences
from engine.threads import torch_threads
from engine.training import step as train_step
from engine.upsample import label_fractions

FRAME_STEP = 3          # every 3rd frame of a training sequence
CROP_HW = (40, 64)      # grid cells of a training crop (320 x 512 pixels)
SCALES = (0.85, 1.25)
BATCH = 8
STEPS = 700
LR = 2e-3
MAX_EXTRA_CLICKS = 3
ERROR_WEIGHT = 4.0


# ----------------------------------------------------------------------------------------------- data

def _cached_embeddings(folder: Path, n_frames: int):
    """The (T, h, w, D) float16 memmap of a complete embedding cache folder (read only), or None."""
    try:
        header = json.loads((folder / "embeddings.json").read_text())
        ready = (folder / "embeddings.ready").read_bytes()
    except (OSError, ValueError):
        return None
    shape = tuple(header["shape"])
    if shape[0] != n_frames or len(ready) != n_frames or any(b != 1 for b in ready):
        return None
    return np.memmap(folder / "embeddings.f16", "<f2", "r", shape=shape)


def load_frames(davis_root, sequences, embedding_cache=None, progress=None, embedder=None) -> list[dict]:
    """Every FRAME_STEP-th frame of these sequences: {"seq", "emb" (h, w, D) float16, "gt" (h, w) cell
    fractions of the object, "rgb" (3, h, w), "embedding_weights" (the embedder's weights_id)}. DAVIS 2016: one object, every non-zero pixel.
    embedder: the network whose embeddings these are (None: the shipped one, on the CPU)."""
    if embedder is None:
        from engine.embedding import Embedder

        embedder = Embedder.load(device="cpu")
    out = []
    seqs = load_sequences(davis_root, None, sequences)
    for i, seq in enumerate(seqs):
        cached = None
        if embedding_cache is not None:
            cached = _cached_embeddings(Path(embedding_cache) / f"{seq.image_dir.name}-{embedder.weights_id}",
                                        len(seq))
        for t in range(0, len(seq), FRAME_STEP):
            image = np.array(Image.open(seq.image_dir / f"{seq.frame_names[t]}.jpg").convert("RGB"))
            emb = np.array(cached[t]) if cached is not None else embedder.embed(image).astype(np.float16)
            grid = emb.shape[:2]
            gt = label_fractions((seq.ground_truth(t) > 0).astype(np.uint8), [1], grid)[0]
            if gt.max() < 0.5:
                continue  # the object is not on this frame
            out.append({"seq": seq.name, "emb": emb, "gt": gt, "rgb": grid_rgb(image, grid),
                        "embedding_weights": embedder.weights_id})
        if progress is not None:
            progress("loading sequences", i + 1, len(seqs))
    return out


def _augment(frame: dict, rng: np.random.Generator):
    """(emb (h, w, D) float32, gt (h, w), rgb (3, h, w)): a flipped, rescaled crop of CROP_HW cells that shows
    some of the object (None when it does not)."""
    emb, gt, rgb = frame["emb"].astype(np.float32), frame["gt"], frame["rgb"].transpose(1, 2, 0)
    s = rng.uniform(*SCALES)
    h, w = gt.shape
    size = (max(int(round(w * s)), CROP_HW[1]), max(int(round(h * s)), CROP_HW[0]))
    emb = cv2.resize(emb, size, interpolation=cv2.INTER_LINEAR)
    # torch's normalize, as the shipped weights were trained (a suspect once; numpy's norm measured the same)
    emb = F.normalize(torch.from_numpy(emb).clone(), dim=2, eps=1e-6).numpy()
    gt = cv2.resize(gt, size, interpolation=cv2.INTER_LINEAR)
    rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        emb, gt, rgb = emb[:, ::-1], gt[:, ::-1], rgb[:, ::-1]
    H, W = gt.shape
    ch, cw = CROP_HW
    ys, xs = np.nonzero(gt >= 0.5)
    if len(ys) == 0:
        return None
    if rng.random() < 0.8:  # mostly around the object, sometimes anywhere
        k = rng.integers(len(ys))
        y0 = int(np.clip(ys[k] - rng.integers(ch), 0, H - ch))
        x0 = int(np.clip(xs[k] - rng.integers(cw), 0, W - cw))
    else:
        y0, x0 = int(rng.integers(H - ch + 1)), int(rng.integers(W - cw + 1))
    sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
    gt = np.ascontiguousarray(gt[sl])
    if (gt >= 0.5).sum() < 2:
        return None
    return np.ascontiguousarray(emb[sl]), gt, np.ascontiguousarray(rgb[sl].transpose(2, 0, 1))


def _inside_point(region: np.ndarray, rng: np.random.Generator, p_interior: float) -> tuple[int, int]:
    """(x, y) cell of a click inside ``region``: its interior-most cell, or a random one well inside."""
    if rng.random() < p_interior:
        return su.interior_point(region)
    d = distance_inside(region)
    ys, xs = np.nonzero(d >= max(1.0, 0.4 * d.max()))
    k = rng.integers(len(ys))
    return int(xs[k]), int(ys[k])


def _corrupt(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(h, w) bool: a plausible wrong mask of the object (what propagation or an earlier edit left)."""
    m = gt.astype(np.uint8)
    op = rng.integers(4)
    k = 2 * int(rng.integers(1, 4)) + 1
    if op == 0:
        m = cv2.dilate(m, np.ones((k, k), np.uint8))
    elif op == 1:
        m = cv2.erode(m, np.ones((k, k), np.uint8))
    elif op == 2:  # a part cut off along a random line through the object
        ys, xs = np.nonzero(m)
        i = rng.integers(len(ys))
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[: m.shape[0], : m.shape[1]]
        m[(np.cos(a) * (xx - xs[i]) + np.sin(a) * (yy - ys[i])) > 0] = 0
    else:
        dy, dx = rng.integers(-3, 4, size=2)
        m = np.roll(m, (int(dy), int(dx)), axis=(0, 1))
    if rng.random() < 0.3:
        cy, cx = int(rng.integers(m.shape[0])), int(rng.integers(m.shape[1]))
        cv2.circle(m, (cx, cy), int(rng.integers(2, 7)), 1, -1)
    return m > 0


class _Clicks:
    """One training sample's state: its crop, the clicked cells and the previous mask."""

    def __init__(self, emb, gt, rgb, rng):
        self.emb, self.gt, self.rgb = emb, gt, rgb
        self.gt_bin = gt >= 0.5
        self.pos = np.zeros(gt.shape, bool)
        self.neg = np.zeros(gt.shape, bool)
        if rng.random() < 0.5:
            self.prev = np.zeros(gt.shape, bool)
            x, y = _inside_point(self.gt_bin, rng, 0.5)
            self.pos[y, x] = True
        else:
            self.prev = _corrupt(self.gt_bin, rng)
            self.click(self.prev, rng)

    def click(self, pred: np.ndarray, rng) -> None:
        """The next click, at the largest error of ``pred`` (nothing when it is exact)."""
        found = su.largest_error_region(pred, self.gt_bin)
        if found is None:
            return
        region, positive = found
        x, y = _inside_point(region, rng, 0.7)
        (self.pos if positive else self.neg)[y, x] = True
        (self.neg if positive else self.pos)[y, x] = False

    def features(self) -> np.ndarray:
        return features(self.emb, self.pos, self.neg, self.prev.astype(np.float32), self.rgb)


def _batch(frames, rng) -> list[_Clicks]:
    out = []
    while len(out) < BATCH:
        crop = _augment(frames[rng.integers(len(frames))], rng)
        if crop is not None:
            out.append(_Clicks(*crop, rng))
    return out


def _loss(logits: torch.Tensor, target: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """BCE against the cell fractions, ERROR_WEIGHT times more where the previous mask was wrong (what the click
    is for: without it the network learns to copy the previous mask), + (1 - soft IoU) per sample."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum((1, 2, 3))
    union = (p + target - p * target).sum((1, 2, 3))
    weight = 1.0 + ERROR_WEIGHT * (prev != (target >= 0.5)).float()
    bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
    return bce + (1 - inter / union.clamp_min(1e-6)).mean()


# ----------------------------------------------------------------------------------------------- training

def train_click_model(frames: list[dict], seed: int = 0, steps: int = STEPS, log=print,
                      progress=None) -> tuple[ClickModel, dict]:
    """Train on ``frames`` (load_frames) -> (model, record of the run)."""
    with torch_threads(1):  # repeatable, and the machine's other core stays free
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        net = ClickNet(dim=frames[0]["emb"].shape[-1])
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps, pct_start=0.05)
        start = time.perf_counter()
        running = None
        for step in range(steps):
            batch = _batch(frames, rng)
            net.eval()
            for _ in range(int(rng.integers(0, MAX_EXTRA_CLICKS + 1))):
                with torch.no_grad():
                    x = torch.from_numpy(np.stack([s.features() for s in batch]))
                    pred = (net(x)[:, 0] > 0).numpy()
                for s, p in zip(batch, pred):
                    s.prev = p
                    s.click(p, rng)
            net.train()
            x = torch.from_numpy(np.stack([s.features() for s in batch]))
            target = torch.from_numpy(np.stack([s.gt for s in batch]))[:, None]
            prev = torch.from_numpy(np.stack([s.prev for s in batch]))[:, None]
            loss = _loss(net(x), target, prev)
            running = train_step(opt, sched, loss, running)
            if progress is not None:
                progress("training", step + 1, steps)
            if step % 100 == 0 or step == steps - 1:
                log(f"step {step:4d}  loss {running:.4f}  {time.perf_counter() - start:.0f} s")
        seconds = time.perf_counter() - start
    record = {"seed": seed, "steps": steps, "batch": BATCH, "lr": LR, "crop_cells": list(CROP_HW),
              "scales": list(SCALES), "frame_step": FRAME_STEP, "max_extra_clicks": MAX_EXTRA_CLICKS,
              "error_weight": ERROR_WEIGHT,
              "frames": len(frames), "sequences": sorted({f["seq"] for f in frames}),
              "final_running_loss": round(float(running), 5), "seconds": round(seconds, 1),
              "torch": torch.__version__, "threads": 1,
              "parameters": int(sum(p.numel() for p in net.parameters()))}
    return ClickModel(net, frames[0]["embedding_weights"]), record


def _write(model: ClickModel, record: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "click_model.pt"
    model.save(weights)
    atomic_write_json(out_dir / "click_model.json", record)
    return weights


def kfold_folds(names: list[str], folds: int) -> list[list[str]]:
    """Folds of the sorted sequence names, in order (5 folds of 30: six consecutive names each)."""
    names = sorted(names)
    size = -(-len(names) // folds)
    return [names[i * size:(i + 1) * size] for i in range(folds)]


def run_kfold(davis_root, folds: int = 5, seed: int = 0, steps: int = STEPS, embedding_cache=None,
              frames_per_sequence: int = 3, out_dir=None, fold_weights_dir=None, log=print, progress=None) -> dict:
    """Train on all folds but one and click-eval the held-out one with the model, for every fold, and the
    retrieval heuristics on the same frames. Writes click_model_kfold.json (the summary) to out_dir and each
    fold's weights (click_model_fold<i>.pt) to fold_weights_dir, when given; returns the whole click-eval results."""
    from engine.click_eval import run_click_eval
    from engine.evaluation import default_session_factory

    names = [s.name for s in load_sequences(davis_root, "train")]
    frames = load_frames(davis_root, names, embedding_cache, progress)
    base = default_session_factory(embedding_cache=embedding_cache)

    def factory(click_model):
        def make(project_dir, video_path):
            session = base(project_dir, video_path)
            session.set_click_model(click_model)
            return session
        return make

    out = {"seed": seed, "steps": steps, "frames_per_sequence": frames_per_sequence, "folds": []}
    out["heuristics"] = run_click_eval(davis_root, None, names, frames_per_sequence, make_session_fn=factory(None))
    for i, held in enumerate(kfold_folds(names, folds)):
        log(f"fold {i}: held out {', '.join(held)}")
        model, record = train_click_model([f for f in frames if f["seq"] not in held], seed, steps, log, progress)
        if fold_weights_dir is not None:
            model.save(Path(fold_weights_dir) / f"click_model_fold{i}.pt")
        result = run_click_eval(davis_root, None, held, frames_per_sequence, make_session_fn=factory(model))
        out["folds"].append({"held_out": held, "train_seconds": record["seconds"], "model": result})
        log(f"fold {i}: NoC@90 {result['NoC@90']:.2f}")
    out["summary"] = kfold_summary(out)
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "click_model_kfold.json",
                          {**{k: out[k] for k in ("seed", "steps", "frames_per_sequence", "summary")},
                           "folds": [{k: f[k] for k in ("held_out", "train_seconds")} for f in out["folds"]]})
    return out


def kfold_summary(result: dict) -> dict:
    """Means over every held-out object of the model and of the heuristics, per-sequence figures of both, and
    the 5 sequences where the model is worst at NoC@90."""
    from engine.click_eval import _summary

    max_clicks = result["heuristics"]["max_clicks"]
    runs = {"model": {seq: q for f in result["folds"] for seq, q in f["model"]["sequences"].items()},
            "heuristics": result["heuristics"]["sequences"]}
    secs = {"model": [f["model"]["click_seconds"] for f in result["folds"]],
            "heuristics": [result["heuristics"]["click_seconds"]]}
    summary = {}
    for name, seqs in runs.items():
        summary[name] = _summary([s for q in seqs.values() for s in q["samples"]], max_clicks)
        summary[name]["click_ms"] = 1000 * float(np.mean(secs[name]))
    per_seq = {seq: {name: {k: runs[name][seq][k] for k in ("NoC@85", "NoC@90", "mIoU")} for name in runs}
               for seq in runs["model"]}
    summary["worst5"] = sorted(per_seq.items(), key=lambda kv: -kv[1]["model"]["NoC@90"])[:5]
    summary["per_sequence"] = per_seq
    return summary


def kfold_table(result: dict) -> str:
    """The k-fold's text table: the model and the heuristics over all held-out objects, then the model's worst
    5 sequences."""
    from engine.click_eval import MIN_CLICKS

    s = result["summary"]
    head = f"{'':<30}{'NoC@85':>8}{'NoC@90':>8}" + "".join(f"{'IoU@' + str(k):>8}" for k in range(1, MIN_CLICKS + 1))
    lines = [head]

    def row(name, q):
        return (f"{name:<30}{q['NoC@85']:>8.2f}{q['NoC@90']:>8.2f}"
                + "".join(f"{q['mIoU'][str(k)]:>8.3f}" for k in range(1, MIN_CLICKS + 1)))

    for name in ("model", "heuristics"):
        lines.append(row(f"{name} ({s[name]['click_ms']:.0f} ms/click)", s[name]))
    lines.append("worst 5 sequences of the model (model, then heuristics):")
    for seq, q in s["worst5"]:
        lines += [row(f"  {seq[:18]} model", q["model"]), row(f"  {seq[:18]} heuristics", q["heuristics"])]
    return "\n".join(lines)


def train_shipped(davis_root, seed: int = 0, steps: int = STEPS, embedding_cache=None, out_dir=None,
                  log=print, progress=None) -> Path:
    """The shipped model: trained on every training sequence, written to out_dir (default resources/clicks)."""
    names = [s.name for s in load_sequences(davis_root, "train")]
    frames = load_frames(davis_root, names, embedding_cache, progress)
    model, record = train_click_model(frames, seed, steps, log, progress)
    record["made_by"] = f"vos-engine train --click-model --seed {seed} (engine.click_model_train)"
    record["data"] = Path(davis_root).name
    return _write(model, record, Path(out_dir) if out_dir is not None else RESOURCES)
