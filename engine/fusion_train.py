"""Training and k-fold validation of the fusion head (`vos-engine train --fusion [--folds K]`).

Data: every frame after the first of the DAVIS 2016 training sequences, with the engine's own output as the
previous frame: the shipped embedder and the default propagation (hand-made rule), forward from the first
frame's ground truth (the `evaluate` protocol). Per frame the head's cues (engine.fusion.cues), the hand-made
rule's logit and the ground truth as stride-8 cell fractions; ~80 KB a frame in RAM.

Loss: binary cross-entropy of the hand-made logit plus the head's residual against the cell fractions, on whole
frames, flipped left-right at random. Adam, cosine learning rate, seeded numpy + torch on one thread.

K-fold (`--folds 5`): the folds of the boundary head (engine.boundary_train.fold_sequences), so that each
sequence can be scored with both heads trained without it.
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
from engine.fusion import WEIGHTS, FusionHead, base_logits, cues, fused_logits, local_similarities
from engine.progress import stage
from engine.propagation import PropagationConfig, rule_probs
from engine.threads import torch_threads
from engine.training import step as train_step

ITERATIONS = 2000
BATCH = 8
LR = 3e-3
NOISE = 0.9         # fraction of training frames whose previous mask is perturbed
SCALED = 0.3        # of those, the fraction also scaled about its centre (an object coming closer or going away)


def engine_frames(davis_root: Path, sequences: list[str], embedding_cache: Path | None = None,
                  cache_dir: Path | None = None, progress=None, fusion_head: str = "none") -> list[dict]:
    """Per sequence {"name", "scores" (n-1, 2, h, w) global similarities, "prev" (n-1, h, w) the previous
    frame's fraction of the object, "local" (n-1, (2r+1)^2, h, w) `local_similarities`, "gt" (n-1, h, w)
    cell fractions}, float16, for every frame after the first. fusion_head: the PropagationConfig.fusion_head
    whose output is the previous frame. With cache_dir, each sequence is read from cache_dir/<name>.npz when
    there (delete the folder after changing propagation: its name records only the embedding head)."""
    from engine.evaluation import default_session_factory, embedded_sessions, load_sequences
    from engine.propagation import PropagationTask, Propagator, forward_from_first_mask
    from engine.retrieval import LabelIndex
    from engine.upsample import grid_size, label_fractions

    cached = {n: Path(cache_dir) / f"{n}.npz" for n in sequences} if cache_dir is not None else {}
    out = {}
    for n, path in cached.items():
        if path.is_file():
            with np.load(path) as z:
                out[n] = {"name": n, **{k: z[k] for k in z.files}}
    todo = [n for n in sequences if n not in out]
    config = PropagationConfig(fusion_head=fusion_head)
    make = default_session_factory(embedding_cache=embedding_cache, config=config)
    propagator = Propagator(config)
    seqs = load_sequences(davis_root, None, todo) if todo else []
    for si, seq, session in embedded_sessions(seqs, make, "vos-fusion", {"embed_seconds": 0.0}):
        gt = [seq.ground_truth(t) for t in range(len(seq))]
        H, W = gt[0].shape
        grid = grid_size(H, W)
        results = {0: (gt[0] == 1).astype(np.uint8)}
        for r in forward_from_first_mask(propagator, len(seq), (H, W), session.embedding, session.video.frame,
                                         results[0]):
            results[r.t] = r.ids
        task = PropagationTask(n_frames=len(seq), size_hw=(H, W), embedding=session.embedding,
                               read_ids=results.__getitem__, keyframes={1: {0}}, objects=[1])
        pools, _ = propagator.reference_pools(task, [1], 0)
        index = LabelIndex(pools, k=config.k, max_prototypes=10 ** 9)
        entry = {k: [] for k in ("scores", "prev", "local", "gt")}
        prev_emb = session.embedding(0)
        for t in range(1, len(seq)):
            emb = session.embedding(t)
            entry["scores"].append(propagator.search(index, emb).astype(np.float16))
            entry["prev"].append(label_fractions(results[t - 1], [1], grid)[0].astype(np.float16))
            entry["local"].append(local_similarities(emb, prev_emb).astype(np.float16))
            entry["gt"].append(label_fractions((gt[t] == 1).astype(np.uint8), [1], grid)[0].astype(np.float16))
            prev_emb = emb
        arrays = {k: np.stack(v) for k, v in entry.items()}
        if seq.name in cached:
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write_bytes(cached[seq.name], buf.getvalue())
        out[seq.name] = {"name": seq.name, **arrays}
        if progress is not None:
            progress(si + 1, len(seqs))
    return [out[n] for n in sequences]


def perturbed(prev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A previous-frame fraction map with the mistakes the engine's own output makes: grown or shrunk by a
    cell or two, a piece cut out, a false blob beside it, shifted, scaled. Trained on the engine's output
    alone, the head learns to trust the previous mask and drifts with its own errors."""
    m = (prev >= 0.5).astype(np.uint8)
    if not m.any():
        return prev
    disk = lambda r: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    out = m.copy()
    if rng.random() < 0.5:
        r = int(rng.integers(1, 3))
        out = cv2.dilate(out, disk(r)) if rng.random() < 0.5 else cv2.erode(out, disk(r))
    if rng.random() < 0.3:
        ys, xs = np.nonzero(m)
        i = rng.integers(len(ys))
        cv2.circle(out, (int(xs[i]), int(ys[i])), int(rng.integers(1, 5)), 0, -1)
    if rng.random() < 0.3:
        ring = cv2.dilate(m, disk(5)) & (1 - m)
        ys, xs = np.nonzero(ring)
        if len(ys):
            i = rng.integers(len(ys))
            cv2.circle(out, (int(xs[i]), int(ys[i])), int(rng.integers(1, 4)), 1, -1)
    if rng.random() < 0.2:
        dy, dx = rng.integers(-2, 3, 2)
        out = np.roll(out, (int(dy), int(dx)), axis=(0, 1))
    if rng.random() < SCALED:
        ys, xs = np.nonzero(out)
        if len(ys):
            warp = cv2.getRotationMatrix2D((float(xs.mean()), float(ys.mean())), 0.0, float(rng.uniform(0.8, 1.25)))
            out = cv2.warpAffine(out, warp, out.shape[::-1], flags=cv2.INTER_NEAREST)
    same = out == m
    return np.where(same, prev, out).astype(np.float32)


def make_batch(data: list[dict], rng: np.random.Generator, batch: int = BATCH, noise: float = NOISE):
    """(cues (B, C, h, w), rule logits (B, 1, h, w), target (B, 1, h, w)) float32 of random frames, the
    previous mask `perturbed` in a `noise` fraction of them."""
    config = PropagationConfig()
    xs, bs, ts = [], [], []
    for _ in range(batch):
        seq = data[rng.integers(len(data))]
        t = int(rng.integers(len(seq["gt"])))
        scores = seq["scores"][t].astype(np.float32)
        prev = seq["prev"][t].astype(np.float32)
        if rng.random() < noise:
            prev = perturbed(prev, rng)
        prev_fr = np.stack([1 - prev, prev])
        x = cues(scores, 1, prev_fr, seq["local"][t].astype(np.float32))
        b = base_logits(rule_probs(scores, prev_fr, config))[1][None]
        g = seq["gt"][t].astype(np.float32)[None]
        if rng.random() < 0.5:
            x, b, g = x[..., ::-1], b[..., ::-1], g[..., ::-1]
        xs.append(x), bs.append(b), ts.append(g)
    t = lambda a: torch.from_numpy(np.stack(a).astype(np.float32))
    return t(xs), t(bs), t(ts)


def train_head(data: list[dict], seed: int = 0, iterations: int = ITERATIONS, noise: float = NOISE, log=print,
               progress=None) -> tuple[FusionHead, dict]:
    """A head trained on `data` (engine_frames) and its training figures; deterministic for a seed."""
    with torch_threads(1):
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        head = FusionHead()
        opt = torch.optim.Adam(head.parameters(), lr=LR)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
        start = time.perf_counter()
        running = base = None
        for it in range(iterations):
            x, b, target = make_batch(data, rng, noise=noise)
            loss = F.binary_cross_entropy_with_logits(fused_logits(b, head(x)), target)
            running = train_step(opt, sched, loss, running)
            with torch.no_grad():
                lb = F.binary_cross_entropy_with_logits(b, target).item()
            base = lb if base is None else 0.98 * base + 0.02 * lb
            if progress is not None:
                progress(it + 1, iterations)
            if it % 250 == 0 or it == iterations - 1:
                log(f"iter {it:5d}  bce {running:.4f}  (hand-made rule {base:.4f})  "
                    f"{time.perf_counter() - start:.0f} s")
    figures = {"iterations": iterations, "batch": BATCH, "lr": LR, "noise": noise, "seed": seed,
               "seconds": round(time.perf_counter() - start, 1), "final_running_bce": round(running, 5),
               "hand_made_running_bce": round(base, 5)}
    return head.eval(), figures


def save_head(head: FusionHead, path: Path, record: dict) -> None:
    """Write the head (config + plain tensors: loadable with weights_only=True) and its record beside it."""
    buf = io.BytesIO()
    torch.save({"config": head.config, "state": {k: v.detach().clone() for k, v in head.state_dict().items()}}, buf)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_json(path.with_suffix(".json"), record)


def _record(davis_root: Path, sequences: list[str], figures: dict, extra: dict, folds: int = 0) -> dict:
    from engine.embedding.network import DEFAULT_WEIGHTS, file_sha256

    command = f"vos-engine train --fusion --seed {figures['seed']}" + (f" --folds {folds}" if folds else "")
    return {"made_by": f"{command} (engine.fusion_train)", "data": davis_root.name,
            "train_sequences": sequences, "embedding_head_sha256_16": file_sha256(DEFAULT_WEIGHTS)[:16],
            "torch": torch.__version__, "threads": 1, **figures,
            "parameters": int(sum(p.numel() for p in FusionHead().parameters())), **extra}


def train_fusion(davis_root: str | Path, out_dir: str | Path | None = None, seed: int = 0, folds: int = 0,
                 embedding_cache: str | Path | None = None, log=print, progress=None) -> Path:
    """Train the fusion head on every sequence of `davis_root` and write head.pt + head.json into out_dir
    (default resources/fusion). With folds >= 2, first the k-fold report (out_dir/kfold.json; each fold's head
    in out_dir/kfold/, or <tmp>/vos-fusion/kfold/ by default). Returns the weights path."""
    from engine.boundary_train import fold_sequences
    from engine.embedding.network import DEFAULT_WEIGHTS, file_sha256
    from engine.evaluation import list_sequences

    davis_root = Path(davis_root)
    fold_dir = (Path(out_dir) if out_dir is not None else Path(tempfile.gettempdir()) / "vos-fusion") / "kfold"
    out_dir = Path(out_dir) if out_dir is not None else WEIGHTS.parent
    names = sorted(list_sequences(davis_root, "train"))
    start = time.perf_counter()
    cache_dir = Path(tempfile.gettempdir()) / "vos-fusion-cache" / file_sha256(DEFAULT_WEIGHTS)[:16]
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


def kfold_report(davis_root: Path, names: list[str], heads: list[Path], embedding_cache, out: Path,
                 seed: int = 0, log=print) -> dict:
    """`evaluate` with the hand-made rule on every sequence, and each fold's sequences with the fusion head
    trained without them (heads[k] for fold k), both without the boundary head (which saw every sequence);
    writes {folds, seed, table, runs} to `out`, returns the runs."""
    from engine.boundary_train import _means, fold_sequences
    from engine.evaluation import compare_table, run_semi_supervised

    def evaluate(seqs, head):
        return run_semi_supervised(davis_root, None, seqs, embedding_cache=embedding_cache,
                                   config=PropagationConfig(fusion_head=str(head), boundary_head="none")).to_json()

    runs = {"hand-made rule": evaluate(names, "none")}
    merged = {"sequences": {}}
    for held, head in zip(fold_sequences(names, len(heads)), heads):
        merged["sequences"].update(evaluate(held, head)["sequences"])
        log(f"evaluated {', '.join(held)} with {head}")
    runs["fusion head (k-fold)"] = _means(merged)
    table = compare_table(runs)
    atomic_write_json(out, {"folds": len(heads), "seed": seed, "table": table, "runs": runs})
    log(table)
    return runs
