"""Pixel embeddings (PML): the network (`Embedder`) and the per-video disk cache (`EmbeddingCache`)."""

from engine.embedding.network import Embedder, append_coords, coord_grid

__all__ = ["Embedder", "append_coords", "coord_grid"]
