"""The GPU paths (CUDA embedder, faiss GpuIndexFlatIP) against the CPU ones. The `gpu`-marked tests skip without
a CUDA device; `vos-engine gpu-check` runs them on a machine that has one."""

import threading

import numpy as np
import pytest
import torch

from engine import retrieval
from engine.retrieval import LabelIndex, gpu_available, l2_normalise

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=f"torch {torch.__version__} sees no CUDA device")
needs_faiss_gpu = pytest.mark.skipif(not gpu_available(),
                                     reason="faiss sees no GPU (faiss-cpu build or no CUDA device)")


def test_retrieval_device_choice_is_honoured_and_reset():
    try:
        retrieval.use_gpu(False)
        assert LabelIndex({0: np.eye(4, dtype=np.float32)}).use_gpu is False
    finally:
        retrieval.use_gpu(None)
    assert LabelIndex({}).use_gpu == gpu_available()
    if not gpu_available():
        with pytest.raises(RuntimeError, match="faiss sees no GPU"):
            retrieval.use_gpu(True)


def test_bench_on_the_cpu_says_where_it_ran():
    from engine.bench import run_bench

    result = run_bench(frames=6, device="cpu")
    assert result["device"] == "cpu" and result["retrieval"] == "cpu" and result["embed_fps"] > 0
    assert LabelIndex({}).use_gpu == gpu_available()  # the bench's choice does not outlive it


@pytest.mark.gpu
@needs_cuda
def test_cuda_embedder_matches_the_cpu_one_on_a_real_frame():
    from engine.embedding import Embedder
    from engine.project import SAMPLE_PROJECT
    from engine.video import open_video

    frame = open_video(SAMPLE_PROJECT / "bigbuckbunny.mp4").frame(40)
    cpu, cuda = Embedder.load("cpu").embed(frame), Embedder.load("cuda").embed(frame)
    assert cuda.shape == cpu.shape
    assert (cpu * cuda).sum(-1).mean() > 0.99


@pytest.mark.gpu
@needs_faiss_gpu
def test_gpu_index_answers_two_threads_at_once_as_the_cpu_does():
    """The GUI searches while a worker propagates: each thread gets its own faiss GPU resources."""
    rng = np.random.default_rng(1)
    pools = {k: l2_normalise(rng.normal(size=(300, 128))) for k in range(3)}
    queries = [l2_normalise(rng.normal(size=(5000, 128))) for _ in range(2)]
    expected = [LabelIndex(pools, use_gpu=False).scores(q) for q in queries]
    got = [None, None]

    def search(i):
        index = LabelIndex(pools, use_gpu=True)
        for _ in range(20):
            got[i] = index.scores(queries[i])

    threads = [threading.Thread(target=search, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
@needs_faiss_gpu
def test_bench_on_cuda_reports_the_same_figures():
    from engine.bench import run_bench

    cpu, gpu = run_bench(frames=12, device="cpu"), run_bench(frames=12, device="cuda")
    assert gpu["device"] == "cuda" and gpu["retrieval"] == "gpu"
    assert set(gpu) == set(cpu) and gpu["embed_fps"] > 0 and gpu["propagate_fps"] > 0
