"""Nearest-reference labelling of pixel embeddings with faiss (the retrieval half of PML).

Every pixel of a frame is labelled by its most similar reference embeddings. To keep the cost
of a frame independent of how many pixels the user annotated, each label's reference pool is
reduced to at most ``max_prototypes`` prototypes by spherical k-means (faiss.Kmeans) before it
is indexed; a frame then costs one inner-product search per label over a few hundred vectors.

Arrays: embeddings are float32 (N, D) rows, L2-normalised, so inner product = cosine similarity.
Scores are float32 (L, N) in label order ``index.labels``; label 0 is background by convention.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np

from engine.threads import ALL_CORES

# All cores for faiss's OpenMP searches. With OMP_WAIT_POLICY=PASSIVE (engine/__init__.py) idle
# threads sleep instead of spinning, so two threads no longer collapse when the cores are busy:
# `vos-engine bench` with a 512-prototype pool measured 47 -> 70 frames/s propagation on the idle
# 2-core machine, and 43.6 vs 43.7 frames/s with a busy-loop process on one core (1 vs 2 threads).
faiss.omp_set_num_threads(ALL_CORES)


def search_threads(n: int) -> None:
    """Run faiss's searches made on the calling thread on n OpenMP threads. OpenMP keeps this per thread, so
    other threads keep ALL_CORES; it also sets torch's threads on this thread (engine/threads.py), so only a
    thread that runs no torch may call it (propagation's search thread)."""
    faiss.omp_set_num_threads(n)


# faiss GPU resources are not thread-safe, and the GUI searches from its own thread while a worker
# propagates: one StandardGpuResources per thread, each with a small scratch space (the indexes hold a few
# hundred prototypes; the default reserves ~18 % of the GPU's memory per resources object).
_GPU_THREAD = threading.local()
GPU_TEMP_MEMORY = 256 << 20
_use_gpu: bool | None = None


def gpu_available() -> bool:
    """True when this faiss build sees a CUDA device (faiss-gpu); faiss-cpu always says False."""
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # pragma: no cover - exotic builds
        return False


def use_gpu(enabled: bool | None) -> None:
    """Whether new LabelIndexes search on the GPU: True, False, or None (whenever faiss sees one, the default).
    `vos-engine bench --device` and `vos-engine gpu-check` use it to measure and compare both paths."""
    global _use_gpu
    if enabled and not gpu_available():
        raise RuntimeError("faiss sees no GPU (the faiss-cpu build, or no CUDA device)")
    _use_gpu = enabled


def _gpu_resources():  # pragma: no cover - needs a GPU
    res = getattr(_GPU_THREAD, "resources", None)
    if res is None:
        res = _GPU_THREAD.resources = faiss.StandardGpuResources()
        res.setTempMemory(GPU_TEMP_MEMORY)
    return res


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """(N, D) -> float32 (N, D) with unit rows (zero rows stay zero)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-6)


def make_prototypes(vectors: np.ndarray, max_prototypes: int = 128, seed: int = 0,
                    niter: int = 8, max_train: int = 4096) -> np.ndarray:
    """Reduce a reference pool (N, D) to at most ``max_prototypes`` unit vectors (M, D) float32.

    Pools that already fit are returned as they are (normalised); larger pools go through spherical
    k-means on a random sample of at most ``max_train`` rows, so the time is bounded too.
    """
    vectors = l2_normalise(vectors)
    n, d = vectors.shape
    if n <= max_prototypes:
        return vectors
    rng = np.random.default_rng(seed)
    train = vectors if n <= max_train else vectors[rng.choice(n, max_train, replace=False)]
    km = faiss.Kmeans(d, max_prototypes, niter=niter, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=max(64, max_train))
    km.train(np.ascontiguousarray(train))
    return l2_normalise(km.centroids)


def share_budget(sizes: list[int], total: int, floor: int = 32) -> list[int]:
    """Prototype budgets of chunks that share one label's `total`: a chunk smaller than an equal share of
    what is left keeps all its vectors (a click's few cells), the others split the rest equally, and no
    chunk gets less than `floor`. So a click does not halve its keyframe's prototypes."""
    budgets = [0] * len(sizes)
    left, rest = total, sorted(range(len(sizes)), key=lambda i: sizes[i])
    while rest:
        share = max(floor, left // len(rest))
        i = rest.pop(0)
        budgets[i] = min(sizes[i], share)
        left = max(0, left - budgets[i])
    return budgets


def _new_index(dim: int, use_gpu: bool):
    if use_gpu:  # pragma: no cover - needs a GPU
        return faiss.GpuIndexFlatIP(_gpu_resources(), dim)
    return faiss.IndexFlatIP(dim)


class LabelIndex:
    """One flat inner-product faiss index per label over that label's prototypes.

    ``scores(q)`` gives, per label, the mean similarity of the ``k`` nearest prototypes of that
    label (k = 1: plain nearest neighbour as in PML). Labels with no references score -1.
    """

    def __init__(self, pools: dict[int, np.ndarray], k: int = 1, max_prototypes: int = 128,
                 use_gpu: bool | None = None, seed: int = 0):
        self.labels: list[int] = sorted(pools)
        self.k = k
        if use_gpu is None:
            use_gpu = gpu_available() if _use_gpu is None else _use_gpu
        self.use_gpu = use_gpu
        self.dim = None
        self._indexes = []
        self.prototypes: dict[int, np.ndarray] = {}
        for lab in self.labels:
            vecs = np.asarray(pools[lab], dtype=np.float32)
            if vecs.ndim != 2:
                raise ValueError(f"pool for label {lab} must be (N, D), got {vecs.shape}")
            if self.dim is None:
                self.dim = vecs.shape[1]
            protos = make_prototypes(vecs, max_prototypes, seed=seed + lab) if len(vecs) else vecs
            self.prototypes[lab] = protos
            if len(protos):
                idx = _new_index(protos.shape[1], self.use_gpu)
                idx.add(np.ascontiguousarray(protos))
            else:
                idx = None
            self._indexes.append(idx)

    def __len__(self) -> int:
        return len(self.labels)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """query (N, D) float32 unit rows -> (L, N) float32 similarity per label."""
        query = np.ascontiguousarray(query, dtype=np.float32)
        out = np.full((len(self.labels), len(query)), -1.0, dtype=np.float32)
        for i, idx in enumerate(self._indexes):
            if idx is None or len(query) == 0:
                continue
            k = min(self.k, idx.ntotal)
            sims, _ = idx.search(query, k)
            out[i] = sims[:, 0] if k == 1 else sims.mean(axis=1)
        return out


def softmax_scores(scores: np.ndarray, temperature: float = 0.05) -> np.ndarray:
    """(L, ...) similarities -> (L, ...) float32 probabilities summing to 1 over axis 0."""
    z = scores / float(temperature)
    z = z - z.max(axis=0, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=0, keepdims=True)
    return z.astype(np.float32, copy=False)


def margin(probs: np.ndarray) -> np.ndarray:
    """(L, ...) probabilities -> (...) top-1 minus top-2 probability (1 = unambiguous)."""
    if probs.shape[0] < 2:
        return np.ones(probs.shape[1:], np.float32)
    part = np.partition(probs, probs.shape[0] - 2, axis=0)
    return (part[-1] - part[-2]).astype(np.float32)
