"""Object-level clicks: a small conv net on the stride-8 embedding grid turns a frame's clicks into its object.

RITM-style (Sofiiuk et al., "Reviving iterative training with mask guidance for interactive segmentation",
2022), made small enough for a CPU by working on the engine's cached (h, w, 128) unit embeddings instead of
pixels. Inputs per grid cell (`features`): the embedding; the maximum cosine similarity to the positive clicked
cells and to the negative ones (retrieval, as the rest of the engine does it); positive and negative click maps
(a disk of one cell and a distance map clipped at DIST_CELLS); the previous mask's cell fractions (the object's
mask on this frame before the click); the frame's mean RGB per cell. A two-level U-Net with dilated convolutions
at the bottom (its receptive field spans the grid) gives the object's grid logits; the engine's
EdgeAwareUpsampler turns them into the full-size mask, as propagation does.

Clicks and scribbles are the same thing here: a stroke is rasterised on the grid (engine.interaction.model_edit)
and its cells are clicked cells; a later stroke's sign wins over an earlier one's on the same cell.

Weights: resources/clicks/click_model.pt (state dict + config, loaded with weights_only=True), made by
`vos-engine train --click-model` (engine/click_model_train.py); how, and the k-fold record that chose it, in
resources/clicks/.
"""

from __future__ import annotations

import io
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engine.atomic import atomic_write_bytes
from engine.distance import distance_to_zero
from engine.errors import FormatError
from engine.threads import torch_threads
from engine.upsample import grid_average, label_fractions

RESOURCES = Path(files("engine.resources") / "clicks")  # resources/clicks in a checkout
WEIGHTS = RESOURCES / "click_model.pt"
DIST_CELLS = 16.0   # click distance maps fall from 1 at a click to 0 this many cells away
MAX_CLICK_CELLS = 256  # similarity to at most this many clicked cells (a long scribble is subsampled)
N_AUX = 10          # planes besides the embedding: 2 similarity, 2 disk, 2 distance, previous mask, 3 RGB


def _click_maps(cells: np.ndarray, emb_flat: torch.Tensor) -> list[np.ndarray]:
    """[similarity, disk, distance] planes of one sign's clicked cells (zeros when there are none)."""
    h, w = cells.shape
    if not cells.any():
        z = np.zeros((h, w), np.float32)
        return [z, z, z]
    sel = emb_flat[torch.from_numpy(cells.reshape(-1))]
    if len(sel) > MAX_CLICK_CELLS:
        sel = sel[torch.from_numpy(np.linspace(0, len(sel) - 1, MAX_CLICK_CELLS).astype(int))]
    # torch, not numpy: numpy's BLAS starts its own threads, which fight the OpenMP ones of faiss and torch on a
    # busy 2-core machine (this product took 30-300 ms in a session, 0.3 ms here)
    sim = (emb_flat @ sel.T).amax(1).numpy().reshape(h, w)
    d = distance_to_zero((~cells).astype(np.uint8))
    return [sim, (d <= 1.0).astype(np.float32), np.maximum(0.0, 1.0 - d / DIST_CELLS)]


def features(emb: np.ndarray, pos_cells: np.ndarray, neg_cells: np.ndarray, prev: np.ndarray,
             rgb: np.ndarray) -> np.ndarray:
    """(D + N_AUX, h, w) float32 network input. emb (h, w, D) unit vectors; pos/neg_cells (h, w) bool clicked
    cells; prev (h, w) the object's cell fractions before the click; rgb (3, h, w) mean colour per cell in 0..1."""
    h, w, D = emb.shape
    # a copy in torch's own (64-byte aligned) memory: BLAS rounds the product's last bit by where a numpy array
    # starts (4 results for one product at 16 offsets), and training with those differences did not repeat
    flat = torch.empty((h * w, D), dtype=torch.float32)
    flat.numpy()[:] = emb.reshape(-1, D)  # numpy's copy: torch's own copy wakes its idle threads, 6 ms
    p_sim, p_disk, p_dist = _click_maps(pos_cells, flat)
    n_sim, n_disk, n_dist = _click_maps(neg_cells, flat)
    aux = np.stack([p_sim, n_sim, p_disk, n_disk, p_dist, n_dist, prev.astype(np.float32)])
    return np.concatenate([emb.transpose(2, 0, 1), aux, rgb]).astype(np.float32)


def grid_rgb(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(3, h, w) float32 mean colour per grid cell in 0..1 of an (H, W, 3) uint8 frame."""
    return grid_average(image.transpose(2, 0, 1).astype(np.float32) / 255.0, grid)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
                         nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class ClickNet(nn.Module):
    """(B, D + N_AUX, h, w) features -> (B, 1, h, w) object logits on the same grid."""

    def __init__(self, dim: int = 128, width: int = 32, mid: int = 48, deep: int = 64):
        super().__init__()
        self.config = {"dim": dim, "width": width, "mid": mid, "deep": deep}
        self.project = nn.Conv2d(dim, width, 1)  # the embedding, compressed before it meets the click maps
        self.stem = nn.Sequential(_conv(width + N_AUX, width), _conv(width, width))
        self.down1 = nn.Sequential(_conv(width, mid, stride=2), _conv(mid, mid))
        self.down2 = nn.Sequential(_conv(mid, deep, stride=2), _conv(deep, deep, dilation=2),
                                   _conv(deep, deep, dilation=4))
        self.up2 = _conv(deep + mid, mid)
        self.up1 = _conv(mid + width, width)
        self.head = nn.Conv2d(width, 1, 1)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e, aux = x[:, : self.dim], x[:, self.dim:]
        s0 = self.stem(torch.cat([self.project(e), aux], 1))
        s1 = self.down1(s0)
        s2 = self.down2(s1)
        u = F.interpolate(s2, size=s1.shape[-2:], mode="bilinear", align_corners=False)
        u = self.up2(torch.cat([u, s1], 1))
        u = F.interpolate(u, size=s0.shape[-2:], mode="bilinear", align_corners=False)
        u = self.up1(torch.cat([u, s0], 1))
        return self.head(u)


class ClickModel:
    """The trained ClickNet with the engine's inference: strokes on a frame -> the object's grid probability."""

    def __init__(self, net: ClickNet, embedding_weights: str):
        self.net = net.eval()
        self.embedding_weights = embedding_weights  # the embedder's weights_id it was trained on

    def fits(self, embedder) -> bool:
        """True when ``embedder`` makes the embeddings this model was trained on (other heads, other features)."""
        return getattr(embedder, "weights_id", None) == self.embedding_weights

    @classmethod
    def load(cls, path: str | Path = WEIGHTS) -> "ClickModel":
        """The weights at ``path`` (FormatError naming the file when it is missing or not a click model)."""
        path = Path(path)
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            net = ClickNet(**blob["config"])
            net.load_state_dict(blob["state_dict"])
            embedding_weights = str(blob["embedding_weights"])
        except FileNotFoundError:
            raise FormatError(path, "click model weights not found (vos-engine train --click-model makes them)") from None
        except Exception as e:  # corrupt or foreign file (torch's own messages run over many lines)
            raise FormatError(path, f"not a click model ({e.__class__.__name__})") from None
        return cls(net, embedding_weights)

    def save(self, path: str | Path) -> None:
        buf = io.BytesIO()
        torch.save({"config": self.net.config, "state_dict": self.net.state_dict(),
                    "embedding_weights": self.embedding_weights}, buf)
        atomic_write_bytes(Path(path), buf.getvalue())

    def grid_probability(self, emb: np.ndarray, pos_cells: np.ndarray, neg_cells: np.ndarray, prev: np.ndarray,
                         image: np.ndarray) -> np.ndarray:
        """(h, w) float32 probability of the object. pos/neg_cells (h, w) bool: the grid cells under the
        object's positive and negative clicks and scribbles on this frame; prev (H, W) bool: its mask before the
        newest one; image (H, W, 3) uint8: the frame."""
        grid = emb.shape[:2]
        prev_frac = label_fractions(prev.astype(np.uint8), [1], grid)[0]
        with torch_threads(1), torch.inference_mode():  # small convolutions: one core is as fast, the other stays free
            x = features(emb, pos_cells, neg_cells, prev_frac, grid_rgb(image, grid))
            logits = self.net(torch.from_numpy(x)[None])[0, 0]
        return torch.sigmoid(logits).numpy()
