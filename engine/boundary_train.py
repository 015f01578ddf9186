"""Training and k-fold validation of the boundary head (`vos-engine train --boundary [--folds K]`).

Data: every frame of the DAVIS 2016 training sequences with the engine's own output on it: the shipped
embedder, the default propagation without a boundary head, forward from the first frame's ground truth
(the `evaluate` protocol). Per frame the head's inputs at half size (guided-filter and bilinear probability,
RGB, from `EdgeAwareUpsampler.half_size`, so training sees exactly what the engine gives it) and the
ground truth as half-size area fractions; kept in RAM (~0.8 MB a frame).

Loss: binary cross-entropy of the gated half-size logits (engine.boundary.gated) against the ground truth,
on 128 x 128 half-size windows centred on pixels the head may change or on the true boundary, flipped and
colour-jittered.
Adam, cosine learning rate, seeded numpy + torch on one thread, so a rerun gives the same weights.

K-fold (`--folds 5`): the sorted sequences are dealt into K folds (name i goes to fold i mod K); for each fold
a head is trained on the other folds and `evaluate` runs on the fold's sequences with it, at the engine's
band (PropagationConfig.boundary_band) and at TRAIN_BAND. The report (kfold.json and a table) puts the mean
over all sequences and the worst ones beside the same run without the head. The shipped head is then
trained on every sequence.
"""

import io
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.atomic import atomic_write_bytes, atomic_write_json
from engine.boundary import TRAIN_BAND, WEIGHTS, BoundaryHead, changeable, gated, inputs, quarter
from engine.progress import stage
from engine.threads import torch_threads
from engine.training import step as train_step

WINDOW = 128        # half-size training window side
ITERATIONS = 1500
BATCH = 12
LR = 3e-3


# ----------------------------------------------------------------------------------------------- data

def engine_frames(davis_root: Path, sequences: list[str], embedding_cache: Path | None = None,
                  cache_dir: Path | None = None, progress=None) -> list[dict]:
    """Per sequence {"name", "guided", "plain" (n, H/2, W/2) float16, "rgb" (n, H/2, W/2, 3) uint8,
    "gt" (n, H/2, W/2) float16}: the engine's output on every frame after the first. With cache_dir, each
    sequence is read from cache_dir/<name>.npz when there (delete the folder after changing propagation or
    upsampling: its name records only the embedding head). progress(done, total) per sequence."""
    from engine.evaluation import default_session_factory, embedded_sessions, load_sequences
    from engine.propagation import PropagationConfig, Propagator, forward_from_first_mask

    cached = {n: Path(cache_dir) / f"{n}.npz" for n in sequences} if cache_dir is not None else {}
    out = {}
    for n, path in cached.items():
        if path.is_file():
            with np.load(path) as z:
                out[n] = {"name": n, **{k: z[k] for k in z.files}}
    todo = [n for n in sequences if n not in out]
    config = PropagationConfig(boundary_head="none")
    make = default_session_factory(embedding_cache=embedding_cache, config=config)
    propagator = Propagator(config)
    up = propagator.upsampler
    seqs = load_sequences(davis_root, None, todo) if todo else []
    for si, seq, session in embedded_sessions(seqs, make, "vos-boundary", {"embed_seconds": 0.0}):
        gt = [seq.ground_truth(t) for t in range(len(seq))]
        H, W = gt[0].shape
        entry = {k: [] for k in ("guided", "plain", "rgb", "gt")}
        for r in forward_from_first_mask(propagator, len(seq), (H, W), session.embedding, session.video.frame,
                                         gt[0]):
            plain, smooth, guide = up.half_size(np.stack([r.probs[0], r.probs[1]]), session.video.frame(r.t), (H, W))
            entry["guided"].append(np.clip(smooth[0], 0, 1).astype(np.float16))
            entry["plain"].append(np.clip(plain[1], 0, 1).astype(np.float16))
            entry["rgb"].append(guide)
            hh, hw = guide.shape[:2]
            frac = cv2.resize((gt[r.t] == 1).astype(np.float32), (hw, hh), interpolation=cv2.INTER_AREA)
            entry["gt"].append(frac.astype(np.float16))
        arrays = {k: np.stack(v) for k, v in entry.items()}
        if seq.name in cached:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write_bytes(cached[seq.name], buf.getvalue())
        out[seq.name] = {"name": seq.name, **arrays}
        if progress is not None:
            progress(si + 1, len(seqs))
    return [out[n] for n in sequences]


def make_batch(data: list[dict], rng: np.random.Generator, batch: int = BATCH):
    """(inputs (B, 6, W/2, W/2), guided, allowed, target (B, 1, W, W)) for W = WINDOW."""
    xs, gs, allowed, ts = [], [], [], []
    while len(xs) < batch:
        seq = data[rng.integers(len(data))]
        t = int(rng.integers(len(seq["gt"])))
        g = seq["guided"][t].astype(np.float32)
        gt = seq["gt"][t].astype(np.float32)
        a = changeable(g, TRAIN_BAND)
        H, W = g.shape
        ys, xs_ = np.nonzero(a if rng.random() < 0.5 else (gt > 0.05) & (gt < 0.95))
        if len(ys) == 0:
            continue
        i = rng.integers(len(ys))
        y0 = int(np.clip(ys[i] - WINDOW // 2 + rng.integers(-16, 17), 0, H - WINDOW)) // 2 * 2
        x0 = int(np.clip(xs_[i] - WINDOW // 2 + rng.integers(-16, 17), 0, W - WINDOW)) // 2 * 2
        win = (slice(y0, y0 + WINDOW), slice(x0, x0 + WINDOW))
        g, p, im, a, gt = g[win], seq["plain"][t][win].astype(np.float32), seq["rgb"][t][win], a[win], gt[win]
        if rng.random() < 0.5:
            g, p, im, a, gt = g[:, ::-1], p[:, ::-1], im[:, ::-1], a[:, ::-1], gt[:, ::-1]
        im = np.clip(im.astype(np.float32) * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25, 3), 0, 255)
        c = np.ascontiguousarray
        xs.append(inputs(quarter(c(g)), quarter(c(p)), quarter(c(im))))
        gs.append(c(g)[None])
        allowed.append(c(a)[None])
        ts.append(c(gt)[None])
    t = lambda a: torch.from_numpy(np.stack(a).astype(np.float32))
    return t(xs), t(gs), t(allowed), t(ts)


# ----------------------------------------------------------------------------------------------- training

def train_head(data: list[dict], seed: int = 0, iterations: int = ITERATIONS, log=print,
               progress=None) -> tuple[BoundaryHead, dict]:
    """A head trained on `data` (engine_frames) and its training figures. Deterministic for a seed: one torch
    thread, and the caller's threads (faiss's too, engine/threads.py) come back afterwards, so the k-fold's
    evaluations search on every core."""
    with torch_threads(1):
        return _train_head(data, seed, iterations, log, progress)


def _train_head(data, seed, iterations, log, progress):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = BoundaryHead()
    opt = torch.optim.Adam(head.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    start = time.perf_counter()
    running = base = None
    for it in range(iterations):
        x, g, allowed, target = make_batch(data, rng)
        logit = gated(g, head(x), allowed)
        loss = F.binary_cross_entropy_with_logits(logit, target)
        running = train_step(opt, sched, loss, running)
        with torch.no_grad():
            b = F.binary_cross_entropy(g.clamp(1e-4, 1 - 1e-4), target).item()
        base = b if base is None else 0.98 * base + 0.02 * b
        if progress is not None:
            progress(it + 1, iterations)
        if it % 250 == 0 or it == iterations - 1:
            log(f"iter {it:5d}  bce {running:.4f}  (guided filter alone {base:.4f})  "
                f"{time.perf_counter() - start:.0f} s")
    figures = {"iterations": iterations, "batch": BATCH, "window_half_size": WINDOW, "lr": LR, "seed": seed,
               "seconds": round(time.perf_counter() - start, 1), "final_running_bce": round(running, 5),
               "guided_filter_running_bce": round(base, 5)}
    return head.eval(), figures


def save_head(head: BoundaryHead, path: Path, record: dict) -> None:
    """Write the head (config + plain tensors: loadable with weights_only=True) and its record beside it."""
    buf = io.BytesIO()
    torch.save({"config": head.config, "state": {k: v.detach().clone() for k, v in head.state_dict().items()}}, buf)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_json(path.with_suffix(".json"), record)


def _record(davis_root: Path, sequences: list[str], figures: dict, extra: dict, folds: int = 0) -> dict:
    from engine.embedding.network import DEFAULT_WEIGHTS, file_sha256

    command = f"vos-engine train --boundary --seed {figures['seed']}" + (f" --folds {folds}" if folds else "")
    return {"made_by": f"{command} (engine.boundary_train)", "data": davis_root.name,
            "train_sequences": sequences, "embedding_head_sha256_16": file_sha256(DEFAULT_WEIGHTS)[:16],
            "torch": torch.__version__, "threads": 1, **figures,
            "parameters": int(sum(p.numel() for p in BoundaryHead().parameters())), **extra}


def train_boundary(davis_root: str | Path, out_dir: str | Path | None = None, seed: int = 0,
                   folds: int = 0, embedding_cache: str | Path | None = None, log=print,
                   progress=None) -> Path:
    """Train the boundary head on every sequence of `davis_root` and write head.pt + head.json into out_dir
    (default resources/boundary). With folds >= 2, first the k-fold report (out_dir/kfold.json; each fold's
    head in out_dir/kfold/, or <tmp>/vos-boundary/kfold/ by default). Returns the weights path.
    progress(stage, done, total)."""
    from engine.evaluation import list_sequences

    davis_root = Path(davis_root)
    # each fold's head: beside an explicit out_dir, else in <tmp> (never into the package's resources)
    fold_dir = (Path(out_dir) if out_dir is not None else Path(tempfile.gettempdir()) / "vos-boundary") / "kfold"
    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS.parent
    names = sorted(list_sequences(davis_root, "train"))
    start = time.perf_counter()
    from engine.embedding.network import DEFAULT_WEIGHTS, file_sha256

    cache_dir = Path(tempfile.gettempdir()) / "vos-boundary-cache" / file_sha256(DEFAULT_WEIGHTS)[:16]
    data = engine_frames(davis_root, names, embedding_cache, cache_dir, progress=stage(progress, "engine output"))
    log(f"engine output of {sum(len(d['gt']) for d in data)} frames of {len(data)} sequences "
        f"in {time.perf_counter() - start:.0f} s")
    extra = {}
    if folds >= 2:
        paths = []
        for k, held in enumerate(fold_sequences(names, folds)):
            head, figures = train_head([d for d in data if d["name"] not in held], seed=seed, log=log,
                                       progress=stage(progress, f"training fold {k + 1} of {folds}"))
            paths.append(fold_dir / f"fold{k + 1}.pt")
            save_head(head, paths[-1], _record(davis_root, [n for n in names if n not in held], figures,
                                               {"held_out": held}))
        runs = kfold_report(davis_root, names, paths, embedding_cache, out_dir / "kfold.json", seed, log)
        extra["kfold"] = {name: {k: round(r[k], 4) for k in ("JF_mean", "J_mean", "F_mean")}
                          for name, r in runs.items()}
    head, figures = train_head(data, seed=seed, log=log, progress=stage(progress, "training"))
    path = out_dir / "head.pt"
    figures["seconds_all"] = round(time.perf_counter() - start, 1)
    save_head(head, path, _record(davis_root, names, figures, extra, folds))
    log(f"wrote {path} in {time.perf_counter() - start:.0f} s")
    return path


def fold_sequences(names: list[str], folds: int) -> list[list[str]]:
    """The held-out sequences of each fold: the sorted names dealt out, name i to fold i mod K."""
    names = sorted(names)
    return [names[k::folds] for k in range(folds)]


def kfold_report(davis_root: Path, names: list[str], heads: list[Path], embedding_cache, out: Path,
                 seed: int = 0, log=print) -> dict:
    """`evaluate` without a head on every sequence, and each fold's sequences with the head trained
    without them (heads[k] for fold k), at the engine's band and at the band it was trained on; writes
    {folds, seed, table, runs} to `out`, returns the runs."""
    from engine.evaluation import compare_table, run_semi_supervised
    from engine.propagation import PropagationConfig

    def evaluate(seqs, head, band=PropagationConfig.boundary_band):
        return run_semi_supervised(davis_root, None, seqs, embedding_cache=embedding_cache,
                                   config=PropagationConfig(boundary_head=str(head), boundary_band=band)).to_json()

    runs = {"without head": evaluate(names, "none")}
    for name, band in (("with head (k-fold)", PropagationConfig.boundary_band),
                       (f"with head (k-fold), band {TRAIN_BAND} as trained", TRAIN_BAND)):
        merged = {"sequences": {}}
        for held, head in zip(fold_sequences(names, len(heads)), heads):
            merged["sequences"].update(evaluate(held, head, band)["sequences"])
            log(f"evaluated {', '.join(held)} with {head}, band {band}")
        runs[name] = merged_means(merged)
    table = compare_table(runs)
    atomic_write_json(out, {"folds": len(heads), "seed": seed, "table": table, "runs": runs})
    log(table)
    return runs


def merged_means(result: dict) -> dict:
    """J_mean, F_mean, JF_mean over all objects of a merged `evaluate --json` dict, as `evaluate` means them."""
    objs = [o for s in result["sequences"].values() for o in s["objects"].values()]
    out = {m: float(np.mean([o[k] for o in objs])) for m, k in (("J_mean", "J"), ("F_mean", "F"))}
    out["JF_mean"] = (out["J_mean"] + out["F_mean"]) / 2
    return {**out, **result}
