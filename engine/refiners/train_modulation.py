"""Training of the `modulation` refiner (`vos-engine train --refiner modulation`).

Data: DAVIS 2016 train frames, minus the team's hold-out sequences. Every frame is cached once at 1/4 of
the working size (image + ground truth) together with its visual-modulator crop.

Coarse probabilities, two sources (p_engine = 0.8 of the samples from the first):
- REAL engine output: the engine's own Propagator (default config, no refiner) run forward from each
  training sequence's first-frame ground truth on the SHIPPED embedder (resources/embedding; its sha256 is
  recorded with the weights and names the cache folder). The head was trained on these sequences, so its
  maps are somewhat better there (J 0.84 at 1/4 size) than on unseen videos (0.76 on the hold-out), but
  their error structure (stride-8 blur, edge-aware upsampling, drift, spill-over) is the one the refiner
  meets. `embeddings="frozen"` uses the frozen ImageNet Lite0 backbone instead (never trained on DAVIS,
  much worse maps); a refiner trained that way learnt to shrink objects and cost J&F on the hold-out.
  The previous-frame input is the engine's own previous result, as at inference. Cached on disk.
- SIMULATED from the ground truth: a soft stride-8 map (blur, down- and up-sampling), a shifted / scaled /
  eroded or dilated object, holes, look-alike blobs elsewhere or touching the object, low-frequency noise,
  a random temperature; the previous-frame input is a neighbouring frame's ground truth, jittered.
The visual modulator's crop comes from the first frame (as in use) or a random frame of the sequence.

Loss: binary cross-entropy on the refined map at 1/4 size against the area-averaged ground truth, on
random 64 x 112 windows (1/4 size) around the object. Adam, cosine learning rate, seeded (numpy + torch),
one thread so that runs repeat exactly. Time and the exact settings are written next to the weights.
"""

import io
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.atomic import atomic_write_bytes, atomic_write_json
from engine.progress import stage
from engine.refiners.modulation import (
    RESOURCES, ModulatedRefiner, gaussian_prior, object_crop, prep_image, quarter_size,
)
from engine.training import step as train_step

HOLDOUT = ("bmx-bumps", "drift-turn", "horsejump-low", "kite-walk", "soccerball", "stroller")
CROP_HW = (64, 112)     # training window at 1/4 size (even, so the 1/8 prior crops align)


# ----------------------------------------------------------------------------------------------- data

def load_cache(davis_root: Path, sequences: list[str], cache_dir: Path | None = None, log=print,
               embeddings: str = "frozen", progress=None) -> list[dict]:
    """Per sequence: images (n, 3, h4, w4) float16 normalised, gt (n, h4, w4) float32 area fraction,
    crops (n, 3, 64, 64) float16; with cache_dir also the engine's coarse output `eng` (n, h4, w4) float16
    and result `eng_ids` (n, h4, w4) bool (computed once, then read from cache_dir/<seq>.npz).
    progress(done, total) per sequence."""
    out = []
    for name in sequences:
        img_dir = davis_root / "JPEGImages" / "480p" / name
        ann_dir = davis_root / "Annotations" / "480p" / name
        frames = sorted(p.stem for p in img_dir.glob("*.jpg"))
        imgs, gts, crops, full_rgb, full_m = [], [], [], [], []
        for f in frames:
            bgr = cv2.imread(str(img_dir / f"{f}.jpg"), cv2.IMREAD_COLOR)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            m = cv2.imread(str(ann_dir / f"{f}.png"), cv2.IMREAD_GRAYSCALE) > 127
            h4, w4 = quarter_size(*m.shape)
            imgs.append(prep_image(rgb, (h4, w4)).astype(np.float16))
            gts.append(cv2.resize(m.astype(np.float32), (w4, h4), interpolation=cv2.INTER_AREA))
            crops.append(object_crop(rgb, m).astype(np.float16))
            if cache_dir is not None:
                full_rgb.append(rgb), full_m.append(m)
        entry = {"name": name, "images": np.stack(imgs), "gt": np.stack(gts), "crops": np.stack(crops)}
        if cache_dir is not None:
            path = Path(cache_dir) / f"{name}.npz"
            if not path.is_file():
                t0 = time.perf_counter()
                eng, eng_ids = engine_coarse(full_rgb, full_m, embeddings)
                path.parent.mkdir(parents=True, exist_ok=True)
                buf = io.BytesIO()
                np.savez_compressed(buf, eng=eng, eng_ids=eng_ids)
                atomic_write_bytes(path, buf.getvalue())
                log(f"engine coarse maps of {name}: {len(frames)} frames in {time.perf_counter() - t0:.0f} s")
            with np.load(path) as z:
                entry["eng"], entry["eng_ids"] = z["eng"], z["eng_ids"]
        out.append(entry)
        if progress is not None:
            progress(len(out), len(sequences))
    return out


def frozen_embeddings(images: list[np.ndarray]) -> list[np.ndarray]:
    """(H, W, 3) RGB uint8 frames -> (h, w, 152) float32 unit embeddings of the frozen Lite0 backbone."""
    from engine.embedding.network import Backbone, normalise_input, out_size

    backbone = Backbone().eval()
    out = []
    for im in images:
        h, w = out_size(*im.shape[:2])
        with torch.inference_mode():
            s8, s16, _ = backbone(normalise_input(torch.from_numpy(np.ascontiguousarray(im)[None])))
            s16 = F.interpolate(s16, size=s8.shape[2:], mode="bilinear", align_corners=False)
            e = torch.cat([F.normalize(s8, dim=1), F.normalize(s16, dim=1)], 1)
            e = F.normalize(e, dim=1)[0, :, :h, :w].permute(1, 2, 0).numpy()
        out.append(np.ascontiguousarray(e, np.float32))
    return out


def shipped_embeddings(images: list[np.ndarray]) -> list[np.ndarray]:
    """The product's Embedder (resources/embedding) on each frame."""
    from engine.embedding import Embedder

    emb = Embedder.load()
    return [emb.embed(np.ascontiguousarray(im)) for im in images]


def engine_coarse(images: list[np.ndarray], masks: list[np.ndarray],
                  embeddings: str = "frozen") -> tuple[np.ndarray, np.ndarray]:
    """Run the engine's Propagator forward from masks[0] on "frozen"-backbone or "shipped" embeddings.

    Returns coarse (n, h4, w4) float16 object probability (edge-aware upsampled as the engine does, then
    area-averaged to 1/4 size; frame 0 = its ground truth) and ids (n, h4, w4) bool: the engine's result.
    Without the boundary head: the shipped weights were trained on guided-filter maps (its README)."""
    from engine.propagation import PropagationConfig, Propagator, forward_from_first_mask
    from engine.upsample import EdgeAwareUpsampler

    embs = frozen_embeddings(images) if embeddings == "frozen" else shipped_embeddings(images)
    H, W = masks[0].shape
    h4, w4 = quarter_size(H, W)
    up = EdgeAwareUpsampler()
    q = lambda m: cv2.resize(m.astype(np.float32), (w4, h4), interpolation=cv2.INTER_AREA)
    coarse = [q(masks[0])]
    ids = [q(masks[0]) > 0.5]
    propagator = Propagator(PropagationConfig(boundary_head="none"))
    for r in forward_from_first_mask(propagator, len(images), (H, W), lambda t: embs[t], lambda t: images[t],
                                     masks[0]):
        labels = list(r.probs)
        full = up(np.stack([r.probs[k] for k in labels]), images[r.t], (H, W))
        full = np.clip(full, 0, None)
        full /= np.maximum(full.sum(0, keepdims=True), 1e-6)
        coarse.append(q(full[labels.index(1)]))
        ids.append(q(r.ids == 1) > 0.5)
    return np.stack(coarse).astype(np.float16), np.stack(ids)


def _affine(mask: np.ndarray, rng: np.random.Generator, shift: float, scale: float) -> np.ndarray:
    h, w = mask.shape
    ys, xs = np.nonzero(mask > 0.5)
    cx, cy = (xs.mean(), ys.mean()) if len(xs) else (w / 2, h / 2)
    s = 1.0 + rng.uniform(-scale, scale)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(rng.uniform(-5, 5)), s)
    m[:, 2] += rng.uniform(-shift, shift, 2)
    return cv2.warpAffine(mask.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR)


def _ellipse(shape, rng, cx, cy, rx, ry) -> np.ndarray:
    e = np.zeros(shape, np.uint8)
    cv2.ellipse(e, (int(cx), int(cy)), (max(1, int(rx)), max(1, int(ry))), float(rng.uniform(0, 180)),
                0, 360, 1, -1)
    return e.astype(np.float32)


def simulate_coarse(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """gt (h4, w4) float area fraction -> (h4, w4) float32 coarse probability with engine-like errors."""
    h, w = gt.shape
    m = _affine(gt, rng, shift=3.0, scale=0.08)
    if rng.random() < 0.5:
        k = int(rng.integers(1, 3))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        m = cv2.dilate(m, kernel) if rng.random() < 0.5 else cv2.erode(m, kernel)
    ys, xs = np.nonzero(m > 0.5)
    area = len(xs)
    if area > 20 and rng.random() < 0.3:                               # holes
        for _ in range(int(rng.integers(1, 4))):
            i = rng.integers(len(xs))
            r = np.sqrt(area) * rng.uniform(0.1, 0.3)
            hole = _ellipse((h, w), rng, xs[i], ys[i], r, r * rng.uniform(0.5, 1.5))
            m = m * (1 - hole * rng.uniform(0.5, 0.9))
    if rng.random() < 0.6:                                             # look-alikes elsewhere
        for _ in range(int(rng.integers(1, 4))):
            if area > 20 and rng.random() < 0.5:
                blob = _affine(gt, rng, shift=0.0, scale=0.3)
                dx, dy = rng.uniform(-w / 2, w / 2), rng.uniform(-h / 2, h / 2)
                blob = cv2.warpAffine(blob, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h))
            else:
                r = max(2.0, np.sqrt(max(area, 30)) * rng.uniform(0.2, 0.8))
                blob = _ellipse((h, w), rng, rng.uniform(0, w), rng.uniform(0, h), r, r * rng.uniform(0.4, 2))
            m = np.maximum(m, blob * rng.uniform(0.3, 0.95))
    if area > 20 and rng.random() < 0.4:                               # spill-over touching the object
        k = int(rng.integers(2, 8))
        kernel = np.zeros((2 * k + 1, 2 * k + 1), np.uint8)
        angle = rng.uniform(0, np.pi)
        cv2.line(kernel, (k, k), (int(k + k * np.cos(angle)), int(k + k * np.sin(angle))), 1, 2)
        trail = cv2.dilate((gt > 0.5).astype(np.uint8), kernel).astype(np.float32)
        m = np.maximum(m, trail * rng.uniform(0.3, 0.9))
    noise = cv2.resize(rng.random((max(2, h // 16), max(2, w // 16))).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    m = np.clip(m + (noise - 0.5) * rng.uniform(0.0, 0.5), 0, 1)
    sigma = rng.uniform(0.5, 2.0)
    m = cv2.GaussianBlur(m, (0, 0), sigma)
    grid = cv2.resize(m, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)   # stride 8
    m = cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)
    c = np.clip(m, 1e-3, 1 - 1e-3)
    temp = rng.uniform(0.4, 2.5)
    logit = (np.log(c / (1 - c)) - rng.uniform(-0.5, 0.5)) * temp
    return (1.0 / (1.0 + np.exp(-logit))).astype(np.float32)


def _jitter_mask(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = _affine(gt, rng, shift=2.0, scale=0.05) > 0.5
    if rng.random() < 0.2:
        m = simulate_coarse(gt, rng) > 0.5          # an erroneous previous result
    return m


def make_batch(cache: list[dict], rng: np.random.Generator, batch: int, p_engine: float = 0.5):
    images, coarse, prior, crops, target = [], [], [], [], []
    ch, cw = CROP_HW
    while len(images) < batch:
        seq = cache[rng.integers(len(cache))]
        n = len(seq["gt"])
        t = int(rng.integers(1, n - 1)) if n > 2 else 0
        if seq["gt"][t].sum() < 4:
            continue
        ref = 0 if rng.random() < 0.7 else int(rng.integers(n))
        if seq["gt"][ref].sum() < 4:
            ref = 0
        gt = seq["gt"][t]
        h4, w4 = gt.shape
        h8, w8 = (h4 + 1) // 2, (w4 + 1) // 2
        if "eng" in seq and rng.random() < p_engine:     # the engine's real output and previous result
            c = seq["eng"][t].astype(np.float32)
            p = gaussian_prior(seq["eng_ids"][t - 1], (h8, w8))
        else:
            step = 1 if rng.random() < 0.75 else -1
            c = simulate_coarse(gt, rng)
            p = gaussian_prior(_jitter_mask(seq["gt"][t - step], rng), (h8, w8))
            if rng.random() < 0.1:
                p = np.ones_like(p)                       # no previous mask
        ys, xs = np.nonzero(gt > 0.5)
        cy = ys.mean() if len(ys) else h4 / 2
        cx = xs.mean() if len(xs) else w4 / 2
        y0 = int(np.clip(cy - ch / 2 + rng.uniform(-ch / 3, ch / 3), 0, h4 - ch)) // 2 * 2
        x0 = int(np.clip(cx - cw / 2 + rng.uniform(-cw / 3, cw / 3), 0, w4 - cw)) // 2 * 2
        sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        images.append(seq["images"][t][:, sl[0], sl[1]].astype(np.float32))
        coarse.append(c[sl][None])
        prior.append(p[y0 // 2: (y0 + ch) // 2, x0 // 2: (x0 + cw) // 2][None])
        crop = seq["crops"][ref].astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, :, ::-1]
        crops.append(np.ascontiguousarray(crop))
        target.append(gt[sl][None])
    t = lambda a: torch.from_numpy(np.stack(a))
    return t(images), t(coarse), t(prior), t(crops), t(target)


# ----------------------------------------------------------------------------------------------- training

def train_modulation(davis_root: str | Path, out_dir: str | Path | None = None, seed: int = 0,
                     iterations: int = 2000, batch: int = 16, lr: float = 2e-3, p_engine: float = 0.8,
                     cache_dir: str | Path | None = None, embeddings: str = "shipped", log=print,
                     progress=None) -> Path:
    """Train and write `modulation.pt` + `modulation.json` into out_dir (default resources/refiners).
    progress(stage, done, total): sequences of "loading sequences", iterations of "training".

    cache_dir keeps the engine's coarse maps between runs (default: <tmp>/vos-modulation-cache).
    Returns the weights path. Deterministic for a given seed (one torch thread)."""
    davis_root = Path(davis_root)
    out_dir = Path(out_dir) if out_dir is not None else RESOURCES
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    seqs = sorted(p.name for p in (davis_root / "JPEGImages" / "480p").iterdir() if p.is_dir())
    train_seqs = [s for s in seqs if s not in HOLDOUT]
    t_start = time.perf_counter()
    if cache_dir is None:
        import tempfile

        cache_dir = Path(tempfile.gettempdir()) / "vos-modulation-cache"
    head_sha = ""
    if embeddings == "shipped":
        from engine.embedding.network import DEFAULT_WEIGHTS, file_sha256

        head_sha = file_sha256(DEFAULT_WEIGHTS)[:16]
    cache = load_cache(davis_root, train_seqs, Path(cache_dir) / f"{embeddings}{head_sha and '-' + head_sha}",
                       log=log, embeddings=embeddings, progress=stage(progress, "loading sequences"))
    log(f"cached {sum(len(c['gt']) for c in cache)} frames of {len(cache)} sequences "
        f"in {time.perf_counter() - t_start:.0f} s")
    model = ModulatedRefiner()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    running = None
    for it in range(iterations):
        image, coarse, prior, crop, target = make_batch(cache, rng, batch, p_engine)
        scales = model.visual(crop)
        logit = model(image, coarse, prior, scales)
        loss = F.binary_cross_entropy_with_logits(logit, target)
        running = train_step(opt, sched, loss, running)
        if progress is not None:
            progress(it + 1, iterations)
        if it % 100 == 0 or it == iterations - 1:
            with torch.no_grad():
                base = F.binary_cross_entropy(coarse.clamp(1e-4, 1 - 1e-4), target).item()
            log(f"iter {it:5d}  loss {running:.4f}  (coarse input bce {base:.4f})  "
                f"{time.perf_counter() - t_start:.0f} s")
    seconds = time.perf_counter() - t_start
    weights = out_dir / "modulation.pt"
    buf = io.BytesIO()
    torch.save({"config": model.config, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}},
               buf)
    atomic_write_bytes(weights, buf.getvalue())
    atomic_write_json(out_dir / "modulation.json", {
        "made_by": f"vos-engine train --refiner modulation --seed {seed} (engine.refiners.train_modulation)",
        "data": str(davis_root.name), "train_sequences": train_seqs, "held_out": list(HOLDOUT),
        "coarse_input": f"{p_engine:.0%} the engine's Propagator on {embeddings} embeddings, the rest simulated "
                        "from ground truth (see engine/refiners/train_modulation.py)",
        "embedding_head_sha256_16": head_sha,
        "iterations": iterations, "batch": batch, "lr": lr, "window_quarter_size": list(CROP_HW),
        "seed": seed, "torch": torch.__version__, "threads": 1, "seconds": round(seconds, 1),
        "final_running_bce": round(float(running), 5),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    })
    log(f"wrote {weights} ({weights.stat().st_size // 1024} KiB) in {seconds:.0f} s")
    return weights


if __name__ == "__main__":       # python -m engine.refiners.train_modulation DAVIS_ROOT [OUT_DIR]
    import sys

    train_modulation(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
