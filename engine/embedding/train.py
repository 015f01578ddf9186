"""Training and validation of the PML embedding head on DAVIS 2016 (CPU-friendly).

Why it is cheap: the Lite0 backbone is frozen, so its stride 8/16/32 maps are computed once per
frame and cached (float16, /tmp by default); the head (1x1 convs, ~80k parameters) then trains on
the cached maps in minutes on 2 cores.

Loss (PML's modified triplet loss): for a (reference frame, target frame) pair of one sequence,
each sampled anchor cell of the target takes its *nearest* positive and *nearest* negative among
the reference frame's cells (label = object / background at stride 8), and pays
max(0, d(a, p) - d(a, n) + margin) with d the squared Euclidean distance of unit vectors.

Validation: plain kNN label transfer from the first frame (all its cells) to every other frame of
each hold-out sequence, vote fraction upsampled to full resolution, threshold 0.5, J (IoU) mean
over frames 1..n-2 (DAVIS semi-supervised convention leaves out the first and last frame).
"""

from __future__ import annotations

import json
import platform
import random
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.embedding.network import (BACKBONES, DEFAULT_BACKBONE, DEFAULT_WEIGHTS, INPUT_MEAN, INPUT_STD, Backbone,
                                      EmbeddingHead, append_coords, file_sha256, normalise_input, out_size,
                                      save_head, tune_malloc)
from engine.progress import stage

HOLDOUT = ("bmx-bumps", "drift-turn", "horsejump-low", "kite-walk", "soccerball", "stroller")
IGNORE = 255
FEATURE_CACHE_VERSION = 1


def list_sequences(davis_root: str | Path) -> list[str]:
    root = Path(davis_root) / "JPEGImages" / "480p"
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def _frames(davis_root: Path, seq: str) -> list[Path]:
    return sorted((davis_root / "JPEGImages" / "480p" / seq).glob("*.jpg"))


def read_mask(davis_root: Path, seq: str, name: str) -> np.ndarray:
    """(H, W) bool ground truth of DAVIS 2016 (0/255 PNG)."""
    m = cv2.imread(str(davis_root / "Annotations" / "480p" / seq / (name + ".png")), cv2.IMREAD_GRAYSCALE)
    return m > 127


def cell_labels(mask: np.ndarray, padded_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool -> (hp, wp) uint8 stride-8 labels: 1 if most of the cell is object, else 0;
    cells of the padding (outside ceil(H/8) x ceil(W/8)) are IGNORE."""
    h, w = out_size(*mask.shape)
    frac = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    out = np.full(padded_hw, IGNORE, np.uint8)
    out[:h, :w] = frac > 0.5
    return out


def cache_features(davis_root: str | Path, cache_dir: str | Path, sequences: list[str] | None = None,
                   backbone: Backbone | None = None, log=print, frame_step: int = 1, progress=None) -> Path:
    """Frozen backbone maps of frames 0, frame_step, 2 * frame_step, ... once: <cache_dir>/<seq>.f{i}.npy
    (f0: (T, 40, H/8, W/8), f1: (T, 112, H/16, W/16), f2: (T, 320, H/32, W/32) float16, padded grid;
    labels: (T, H/8, W/8) uint8). Reused when already present and complete.
    progress(done, total) per frame, frames already cached included."""
    davis_root, cache_dir = Path(davis_root), Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    sequences = sequences or list_sequences(davis_root)
    backbone = backbone or Backbone()
    tune_malloc()
    t0 = time.perf_counter()
    all_paths = [_frames(davis_root, seq)[::frame_step] for seq in sequences]
    total, counted = sum(len(p) for p in all_paths), 0
    for si, (seq, paths) in enumerate(zip(sequences, all_paths)):
        done = cache_dir / f"{seq}.done"
        record = {"frames": len(paths), "frame_step": frame_step, "version": FEATURE_CACHE_VERSION,
                  "input_mean": list(INPUT_MEAN), "input_std": list(INPUT_STD), "backbone": backbone.name}
        try:
            if json.loads(done.read_text()) == record:
                counted += len(paths)
                if progress is not None:
                    progress(counted, total)
                continue
        except (OSError, ValueError):
            pass
        outs = None
        for t, p in enumerate(paths):
            rgb = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
            with torch.inference_mode():
                feats = backbone(normalise_input(torch.from_numpy(rgb)[None]))
            if outs is None:
                outs = [np.lib.format.open_memmap(cache_dir / f"{seq}.f{i}.npy", mode="w+", dtype=np.float16,
                                                  shape=(len(paths),) + tuple(f.shape[1:]))
                        for i, f in enumerate(feats)]
                labels = np.zeros((len(paths),) + tuple(feats[0].shape[-2:]), np.uint8)
            for o, f in zip(outs, feats):
                o[t] = f[0].numpy().astype(np.float16)
            labels[t] = cell_labels(read_mask(davis_root, seq, p.stem), feats[0].shape[-2:])
            counted += 1
            if progress is not None:
                progress(counted, total)
        for o in outs:
            o.flush()
        np.save(cache_dir / f"{seq}.labels.npy", labels)
        done.write_text(json.dumps(record))
        log(f"[features] {si + 1}/{len(sequences)} {seq}: {len(paths)} frames, "
            f"{time.perf_counter() - t0:.0f} s elapsed", flush=True)
    return cache_dir


class SequenceFeatures:
    """The cached maps of one sequence (read-only memmaps), see cache_features."""

    def __init__(self, cache_dir: Path, seq: str):
        self.seq = seq
        self.maps = [np.load(cache_dir / f"{seq}.f{i}.npy", mmap_mode="r") for i in range(3)]  # stride 8, 16, 32
        self.labels = np.load(cache_dir / f"{seq}.labels.npy")

    def __len__(self) -> int:
        return len(self.labels)

    def feats(self, idx: list[int]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(np.asarray(m[idx], dtype=np.float32)) for m in self.maps)


def pml_triplet_loss(anchor: torch.Tensor, anchor_lab: torch.Tensor, ref: torch.Tensor, ref_lab: torch.Tensor,
                     margin: float) -> torch.Tensor:
    """PML's modified triplet loss, mean over anchors that have both a positive and a negative.

    anchor: (N, D) unit vectors, anchor_lab: (N,) int labels; ref: (M, D), ref_lab: (M,).
    d = squared Euclidean distance = 2 - 2 cos. Returns a scalar tensor (0 when no valid anchor)."""
    d = (2.0 - 2.0 * anchor @ ref.T).clamp_min(0.0)  # (N, M)
    same = anchor_lab[:, None] == ref_lab[None, :]
    big = torch.finfo(d.dtype).max / 4
    d_pos = torch.where(same, d, torch.full_like(d, big)).min(dim=1).values
    d_neg = torch.where(~same, d, torch.full_like(d, big)).min(dim=1).values
    valid = (d_pos < big) & (d_neg < big)
    if not bool(valid.any()):
        return d.sum() * 0.0
    return F.relu(d_pos[valid] - d_neg[valid] + margin).mean()


def _flat(emb: torch.Tensor, lab: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, hp, wp) embedding + (hp, wp) labels -> valid cells (K, D), (K,) labels."""
    lab_t = torch.from_numpy(lab.reshape(-1).astype(np.int64))
    keep = lab_t != IGNORE
    return emb.reshape(emb.shape[0], -1).T[keep], lab_t[keep]


def _sample_anchors(lab: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Up to n anchor indices, half object / half background when both exist."""
    idx = []
    for value in (1, 0):
        cand = torch.nonzero(lab == value).flatten()
        if len(cand):
            idx.append(cand[torch.randint(len(cand), (n // 2,), generator=gen)])
    return torch.cat(idx)


def multiscale_concat(feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Each scale L2-normalised over channels, upsampled to stride 8, concatenated: (N, 472, hp, wp).
    This is what the residual head's linear path sees (as a sum of per-scale 1x1 convs)."""
    size = feats[0].shape[-2:]
    return torch.cat([F.normalize(feats[0], dim=1)] + [
        F.interpolate(F.normalize(x, dim=1), size=size, mode="bilinear", align_corners=False)
        for x in feats[1:]], 1)


def pca_init(head: EmbeddingHead, data: list["SequenceFeatures"], samples: int = 60000, seed: int = 0,
             center: bool = True) -> None:
    """Set the residual head's linear path to the top-`dim` principal directions of the frozen
    multi-scale features (so the untrained head is already a good, compact frozen-feature embedding)."""
    rng = np.random.default_rng(seed)
    rows = []
    per_frame = max(1, samples // (len(data) * 8))
    for sf in data:
        for t in rng.choice(len(sf), size=min(8, len(sf)), replace=False):
            x = multiscale_concat(sf.feats([int(t)]))[0]
            lab = torch.from_numpy(sf.labels[int(t)].reshape(-1))
            x = x.reshape(x.shape[0], -1).T[lab != IGNORE]
            rows.append(x[torch.from_numpy(rng.choice(len(x), size=min(per_frame, len(x)), replace=False))])
    x = torch.cat(rows).double()
    mu = x.mean(0) if center else torch.zeros(x.shape[1], dtype=x.dtype)
    _, _, vh = torch.linalg.svd(x - mu, full_matrices=False)
    v = vh[: head.dim].float()  # (dim, 472)
    with torch.no_grad():
        start = 0
        for i, conv in enumerate(head.lateral):
            c = conv.in_channels
            conv.weight[: head.dim] = v[:, start:start + c, None, None]
            conv.bias[: head.dim] = -(v @ mu.float()) if i == 0 else 0.0
            start += c


class LateStages(nn.Module):
    """The backbone's blocks after its stride-8 tap, as a map from the cached stride-8 map to all three maps, so the
    late stages can be fine-tuned on the feature cache (the stride-16/32 blocks are cheap; the early ones that
    dominate the cost stay frozen and cached). Blocks from `first` on are trainable; batch norms keep their ImageNet
    statistics (eval mode), as pairs of frames are too few to estimate them."""

    def __init__(self, backbone: Backbone, first: int):
        super().__init__()
        self.taps, self.first, self.backbone = backbone.taps, first, backbone.name
        self.blocks = nn.ModuleDict({str(i): backbone.blocks[i] for i in range(self.taps[0] + 1, self.taps[-1] + 1)})
        for i, block in self.blocks.items():
            block.requires_grad_(int(i) >= first)
        self.eval()

    def train(self, mode: bool = True) -> "LateStages":
        return super().train(False)

    def tuned_state(self) -> dict[str, torch.Tensor]:
        """The trainable blocks' weights, named as in the Backbone (what a head's `backbone_state` keeps)."""
        return {k: v for k, v in self.state_dict().items() if int(k.split(".")[1]) >= self.first}

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x, outs = feats[0], [feats[0]]
        for i, block in self.blocks.items():
            x = block(x)
            if int(i) in self.taps:
                outs.append(x)
        return tuple(outs)


def train_head(cache_dir: Path, sequences: list[str], *, dim: int = 32, hidden: int = 128, margin: float = 0.3,
               iters: int = 1500, pairs_per_iter: int = 4, anchors: int = 1024, ref_cells: int = 4096,
               lr: float = 3e-3, weight_decay: float = 1e-4, seed: int = 0, first_frame_ref: float = 0.5,
               max_gap: int = 40, init: str = "pca", center: bool = True, arch: str = "residual",
               backbone: str = DEFAULT_BACKBONE, late_stages: LateStages | None = None, late_lr: float = 0.1,
               distractors: float = 0.0, log=print,
               log_every: int = 100, on_log=None, progress=None) -> EmbeddingHead:
    """Train an EmbeddingHead on cached features with the PML triplet loss (seeded, deterministic on CPU).
    progress(done, total) per iteration.

    Each iteration draws `pairs_per_iter` (reference, target) pairs from random training sequences; the
    reference is the first frame with probability `first_frame_ref`, else a frame at most `max_gap` away.
    late_stages: trained along with the head (in place) at `late_lr` times its learning rate.
    distractors: the probability that a pair's references also hold a quarter of `ref_cells` cells of a frame of
    another sequence, object and background alike, as background (other objects the target must not match)."""
    if late_stages is not None and late_stages.backbone != backbone:
        raise ValueError(f"late stages of {late_stages.backbone} for a {backbone} head")
    if distractors and len(sequences) < 2:
        raise ValueError("distractors need at least two training sequences")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    data = [SequenceFeatures(cache_dir, s) for s in sequences]
    head = EmbeddingHead(dim=dim, hidden=hidden, arch=arch, backbone=backbone)
    if arch == "residual" and init == "pca":
        pca_init(head, data, seed=seed, center=center)
    if iters <= 0:
        return head.eval()
    groups = [{"params": list(head.parameters()), "lr": lr}]
    if late_stages is not None:
        groups.append({"params": [p for p in late_stages.parameters() if p.requires_grad], "lr": lr * late_lr})
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=iters,
                                                pct_start=0.1)

    def embed(feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return head(late_stages(feats) if late_stages is not None else feats)

    t0, running = time.perf_counter(), 0.0
    for it in range(iters):
        losses = []
        for _ in range(pairs_per_iter):
            i = rng.randrange(len(data))
            sf = data[i]
            t = rng.randrange(1, len(sf))
            if rng.random() < first_frame_ref:
                r = 0
            else:
                r = rng.randrange(max(0, t - max_gap), t)
            emb = embed(sf.feats([r, t]))
            ref, ref_lab = _flat(emb[0], sf.labels[r])
            anc, anc_lab = _flat(emb[1], sf.labels[t])
            if len(ref) > ref_cells:
                sel = torch.randperm(len(ref), generator=gen)[:ref_cells]
                ref, ref_lab = ref[sel], ref_lab[sel]
            if distractors and rng.random() < distractors:
                other = data[(i + rng.randrange(1, len(data))) % len(data)]
                u = rng.randrange(len(other))
                cells, _ = _flat(embed(other.feats([u]))[0], other.labels[u])
                cells = cells[torch.randperm(len(cells), generator=gen)[:ref_cells // 4]]
                ref = torch.cat([ref, cells])
                ref_lab = torch.cat([ref_lab, torch.zeros(len(cells), dtype=ref_lab.dtype)])
            a = _sample_anchors(anc_lab, anchors, gen)
            losses.append(pml_triplet_loss(anc[a], anc_lab[a], ref, ref_lab, margin))
        loss = torch.stack(losses).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if progress is not None:
            progress(it + 1, iters)
        if (it + 1) % log_every == 0 or it + 1 == iters:
            log(f"[train] iter {it + 1}/{iters} loss {running / ((it % log_every) + 1):.4f} "
                f"{time.perf_counter() - t0:.0f} s", flush=True)
            running = 0.0
            if on_log is not None:
                on_log(it + 1, head)
    return head.eval()


def _embed_sequence_frozen(sf: SequenceFeatures, idx: list[int]) -> torch.Tensor:
    """Baseline embedding with no trained head: each scale L2-normalised, upsampled to stride 8,
    concatenated, L2-normalised again. (T, C, hp, wp)."""
    f = sf.feats(idx)
    size = f[0].shape[-2:]
    parts = [F.normalize(f[0], dim=1)] + [
        F.interpolate(F.normalize(x, dim=1), size=size, mode="bilinear", align_corners=False) for x in f[1:]]
    return F.normalize(torch.cat(parts, 1), dim=1)


def knn_label_transfer_j(davis_root: Path, cache_dir: Path, seq: str, embed_fn, k: int = 10,
                         coord_weight: float = 0.0, batch: int = 8, frame_step: int = 1) -> float:
    """J mean of plain first-frame kNN label transfer on one sequence (frames 1..n-2).

    embed_fn(SequenceFeatures, frame indices) -> (T, D, hp, wp) unit embeddings."""
    sf = SequenceFeatures(cache_dir, seq)
    names = [p.stem for p in _frames(davis_root, seq)]
    gt0 = read_mask(davis_root, seq, names[0])
    H, W = gt0.shape
    h, w = out_size(H, W)

    def grid(e: torch.Tensor) -> np.ndarray:  # (D, hp, wp) -> (h, w, D') numpy
        g = e[:, :h, :w].permute(1, 2, 0).numpy()
        return append_coords(g, coord_weight) if coord_weight > 0 else g

    with torch.inference_mode():
        ref = grid(embed_fn(sf, [0])[0]).reshape(h * w, -1)
        ref_lab = torch.from_numpy(sf.labels[0, :h, :w].reshape(-1).astype(np.float32))
        ref_t = torch.from_numpy(ref)
        js = []
        frames = list(range(1, len(sf) - 1, frame_step))
        for s in range(0, len(frames), batch):
            idx = frames[s:s + batch]
            embs = embed_fn(sf, idx)
            for t, e in zip(idx, embs):
                q = torch.from_numpy(grid(e).reshape(h * w, -1))
                top = (q @ ref_t.T).topk(k, dim=1).indices
                prob = ref_lab[top].mean(1).reshape(h, w).numpy()
                up = cv2.resize(prob, (w * 8, h * 8), interpolation=cv2.INTER_LINEAR)[:H, :W]
                pred, gt = up > 0.5, read_mask(davis_root, seq, names[t])
                union = np.logical_or(pred, gt).sum()
                js.append(1.0 if union == 0 else np.logical_and(pred, gt).sum() / union)
    return float(np.mean(js))


def head_embed_fn(head: EmbeddingHead):
    def fn(sf: SequenceFeatures, idx: list[int]) -> torch.Tensor:
        return head(sf.feats(idx))
    return fn


def validate(davis_root: Path, cache_dir: Path, embed_fn, sequences=HOLDOUT, k: int = 10,
             coord_weight: float = 0.0, frame_step: int = 1) -> dict:
    per = {s: knn_label_transfer_j(davis_root, cache_dir, s, embed_fn, k=k, coord_weight=coord_weight,
                                   frame_step=frame_step)
           for s in sequences}
    return {"J_per_sequence": {s: round(v, 4) for s, v in per.items()},
            "J_mean": round(float(np.mean(list(per.values()))), 4), "k": k, "coord_weight": coord_weight,
            "frame_step": frame_step}


def train_embedding(davis_root: str | Path, out_dir: str | Path | None = None, seed: int = 0, iters: int = 200,
                    dim: int = 128, hidden: int = 128, margin: float = 0.3, lr: float = 3e-4,
                    first_frame_ref: float = 0.5, backbone: str = DEFAULT_BACKBONE,
                    feature_cache: str | Path = "/tmp/vos-pml-features", threads: int | None = None,
                    validate_k: int = 10, train_frame_step: int = 2, log=print, progress=None) -> dict:
    """Reproduce the shipped head: cache frozen Lite0 features of DAVIS 2016 train (hold-out sequences
    cached too, for validation only), train the head on the other sequences, validate by first-frame
    kNN against the frozen-backbone baseline, write <out_dir>/head.pt and <out_dir>/training.json
    (default: beside the shipped head, i.e. resources/embedding in a checkout).
    progress(stage, done, total): frames of "caching features", iterations of "training".

    Returns the record written to training.json."""
    davis_root, feature_cache = Path(davis_root), Path(feature_cache)
    out_dir = Path(out_dir) if out_dir is not None else DEFAULT_WEIGHTS.parent
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    t_start = time.perf_counter()
    all_seqs = list_sequences(davis_root)
    train_seqs = [s for s in all_seqs if s not in HOLDOUT]
    val_seqs = [s for s in HOLDOUT if s in all_seqs]
    net = Backbone(backbone)
    cache_features(davis_root, feature_cache, val_seqs, backbone=net, log=log,  # every frame: validation
                   progress=stage(progress, "caching validation features"))
    cache_features(davis_root, feature_cache, train_seqs, backbone=net, log=log, frame_step=train_frame_step,
                   progress=stage(progress, "caching training features"))
    t_feat = time.perf_counter() - t_start
    head = train_head(feature_cache, train_seqs, dim=dim, hidden=hidden, margin=margin, iters=iters, lr=lr,
                      seed=seed, first_frame_ref=first_frame_ref, backbone=backbone, log=log, progress=stage(progress, "training"))
    t_train = time.perf_counter() - t_start - t_feat
    val = {"trained": validate(davis_root, feature_cache, head_embed_fn(head), val_seqs, k=validate_k),
           "trained_with_coords": validate(davis_root, feature_cache, head_embed_fn(head), val_seqs, k=validate_k,
                                           coord_weight=0.3),
           "frozen_baseline": validate(davis_root, feature_cache, _embed_sequence_frozen, val_seqs, k=validate_k)}
    record = {
        "command": f"train_embedding(davis_root, out_dir, seed={seed}, iters={iters}, dim={dim}, hidden={hidden}, "
                   f"margin={margin}, lr={lr}, first_frame_ref={first_frame_ref}, "
                   f"train_frame_step={train_frame_step}, backbone={backbone!r})",
        "cli": "vos-engine train  (or: python -m engine.embedding.train DAVIS_ROOT resources/embedding)",
        "seed": seed, "iters": iters, "dim": dim, "hidden": hidden, "margin": margin, "lr": lr,
        "first_frame_ref": first_frame_ref, "train_frame_step": train_frame_step, "backbone": backbone,
        "loss": "PML triplet: nearest positive / nearest negative among reference-frame cells, hinge",
        "architecture": f"frozen EfficientNet-{backbone.capitalize()} (ImageNet, {BACKBONES[backbone][0]}), "
                        f"stride 8/16/32 block outputs (blocks {', '.join(map(str, BACKBONES[backbone][2]))}) "
                        "L2-normalised per scale, residual 1x1-conv head "
                        "(PCA-initialised linear path + zero-initialised MLP correction), L2-normalised",
        "data": {"root": str(davis_root), "train_sequences": train_seqs, "holdout_sequences": val_seqs},
        "seconds": {"feature_cache": round(t_feat, 1), "train": round(t_train, 1),
                    "total": round(time.perf_counter() - t_start, 1)},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "validation": val,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    save_head(head, out_dir / "head.pt", meta={k: record[k] for k in ("seed", "iters", "dim", "margin",
                                                                      "first_frame_ref", "command")})
    record["weights_sha256"] = file_sha256(out_dir / "head.pt")
    from engine.atomic import atomic_write_json
    atomic_write_json(out_dir / "training.json", record)
    log(f"[done] J trained {val['trained']['J_mean']} vs frozen {val['frozen_baseline']['J_mean']}; "
        f"{record['seconds']['total']} s", flush=True)
    return record


if __name__ == "__main__":  # python -m engine.embedding.train DAVIS_ROOT OUT_DIR
    import sys
    train_embedding(sys.argv[1], sys.argv[2], threads=2)
