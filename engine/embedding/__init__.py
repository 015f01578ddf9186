"""Pixel embeddings (PML): the network (`Embedder`) and the per-video disk cache (`EmbeddingCache`).

    emb = Embedder.load(device="auto")          # frozen Lite0 + trained head from resources/embedding/
    e = emb.embed(frame_rgb)                    # (H, W, 3) uint8 -> (ceil(H/8), ceil(W/8), emb.dim) float32
    e_xy = append_coords(e, weight=0.3)         # optional PML spatial prior, still unit norm (D + 4)
    cache = EmbeddingCache(project_dir / "cache", video, emb)
    for t in cache.compute(progress, cancel): ...   # frame indices as they become readable
    cache.get(t)                                # (h, w, D) float32
"""

from engine.embedding.cache import EmbeddingCache
from engine.embedding.network import Embedder, append_coords, coord_grid

__all__ = ["Embedder", "EmbeddingCache", "append_coords", "coord_grid"]
