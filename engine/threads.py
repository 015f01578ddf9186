"""How many CPU threads torch uses, per call site.

torch and faiss share one OpenMP runtime, so `faiss.omp_set_num_threads(n)` (engine/retrieval.py) also
sets torch's threads on the calling thread. Each user of torch therefore says what it wants for the
duration of its call: the embedding network all cores, small refiner ops one.

"All cores" is VOS_ENGINE_THREADS when set: `vos-engine batch` runs several videos at once and gives each
worker process its share of the cores (with OMP_NUM_THREADS the same), so torch and faiss agree on it.
"""

import os
from contextlib import contextmanager

import torch

ALL_CORES = int(os.environ.get("VOS_ENGINE_THREADS") or 0) or max(1, min(os.cpu_count() or 1, 8))


@contextmanager
def torch_threads(n: int):
    """Run the block with torch on `n` threads, then restore the caller's setting (costs < 1 us)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
