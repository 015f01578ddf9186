"""`vos-engine gpu-check`: on a CUDA machine, prove the GPU paths in a few minutes; elsewhere skip and say why.

Steps, each printed as it ends:
1. the GPU-marked tests (``pytest -m gpu``) of the checkout this engine runs from (none in a wheel install);
2. real frames (the sample project, embedded once on the GPU) propagated twice from the same cached embeddings,
   once with faiss on the CPU and once on the GPU (GpuIndexFlatIP): the masks must agree on >= 99.9 % of pixels;
3. the CUDA embedder against the CPU one on a few of those frames (mean cosine similarity >= 0.99);
4. `vos-engine bench --device cuda`.
Returns 0 when every step passes or when there is no GPU to check (a "skipped:" line gives the reason), else 1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MIN_AGREEMENT = 0.999
MIN_COSINE = 0.99
TESTS = Path(__file__).resolve().parents[1] / "tests"  # present in a checkout only


def skip_reason() -> str | None:
    """Why this machine cannot run the check, or None."""
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def faiss_problem() -> str | None:
    """With a CUDA device: why faiss cannot use it, or None."""
    from engine.retrieval import gpu_available

    if gpu_available():
        return None
    return ("faiss has no GPU support: faiss-cpu and faiss-gpu install the same `faiss` files, so reinstall the "
            "GPU one alone: pip uninstall -y faiss-cpu faiss-gpu && pip install faiss-gpu")


def run_gpu_check(log=print) -> int:
    reason = skip_reason()
    if reason:
        log(f"gpu-check: skipped: {reason}; nothing to check (the CPU paths are what the test suite covers)")
        return 0
    problem = faiss_problem()
    if problem:
        log(f"gpu-check: FAILED: {problem}")
        return 1
    results = [_gpu_tests(log), _retrieval_agreement(log), _embedding_agreement(log), _bench(log)]
    ok = all(results)
    log(f"gpu-check: {'passed' if ok else 'FAILED'} ({sum(results)} of {len(results)} steps passed)")
    return 0 if ok else 1


def _gpu_tests(log) -> bool:
    if not (TESTS / "test_gpu.py").is_file():
        log("1. GPU-marked tests: not run (no tests/ folder beside this engine: run gpu-check from a checkout)")
        return True
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", str(TESTS)],
                          cwd=TESTS.parent, capture_output=True, text=True)
    summary = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    log(f"1. GPU-marked tests: {summary} ({time.perf_counter() - t0:.0f} s)")
    if proc.returncode != 0:
        log(proc.stdout[-4000:] + proc.stderr[-2000:])
    return proc.returncode == 0


def _propagated_masks(project: Path, gpu: bool) -> np.ndarray:
    from engine import retrieval
    from engine.session import Session

    retrieval.use_gpu(gpu)
    try:
        s = Session.open(project)
        try:
            for _ in s.propagate(0, direction="forward"):
                pass
            return np.stack([s.mask(t) for t in range(len(s.video))])
        finally:
            s.close()
    finally:
        retrieval.use_gpu(None)


def _retrieval_agreement(log) -> bool:
    from engine.session import Session

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vos-gpu-check-") as tmp:
        cpu_dir, gpu_dir = Path(tmp) / "cpu", Path(tmp) / "gpu"
        s = Session.open_sample_copy(cpu_dir)  # embeds with the product's device choice: CUDA here
        try:
            for _ in s.embed():
                pass
        finally:
            s.close()
        shutil.copytree(cpu_dir, gpu_dir)  # the same cached embeddings for both runs
        on_cpu, on_gpu = _propagated_masks(cpu_dir, gpu=False), _propagated_masks(gpu_dir, gpu=True)
    agreement = float((on_cpu == on_gpu).mean())
    ok = agreement >= MIN_AGREEMENT
    log(f"2. retrieval, faiss GPU vs CPU on {len(on_cpu)} sample frames: same label on {100 * agreement:.3f} % "
        f"of pixels (need >= {100 * MIN_AGREEMENT:.1f} %) {'ok' if ok else 'FAILED'} "
        f"({time.perf_counter() - t0:.0f} s)")
    return ok


def _embedding_agreement(log, frames: int = 8) -> bool:
    from engine.embedding import Embedder
    from engine.project import SAMPLE_PROJECT
    from engine.video import open_video

    video = open_video(SAMPLE_PROJECT / "bigbuckbunny.mp4")
    picked = [video.frame(t) for t in np.linspace(0, len(video) - 1, frames).astype(int)]
    cpu, cuda = Embedder.load("cpu"), Embedder.load("cuda")
    cosines = [float((cpu.embed(f) * cuda.embed(f)).sum(-1).mean()) for f in picked]
    ok = min(cosines) >= MIN_COSINE
    log(f"3. embedding, CUDA vs CPU on {frames} sample frames: mean cosine similarity {np.mean(cosines):.5f} "
        f"(lowest frame {min(cosines):.5f}, need >= {MIN_COSINE}) {'ok' if ok else 'FAILED'}")
    return ok


def _bench(log) -> bool:
    from engine.bench import run_bench

    result = run_bench(device="cuda")
    log("4. vos-engine bench --device cuda:\n" + json.dumps(result, indent=2))
    return result["device"] == "cuda" and result["retrieval"] == "gpu"
