"""Embedding network, its on-disk cache and the PML triplet loss (tiny frames, a few seconds)."""

import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from engine.embedding import cache as cache_mod
from engine.embedding.cache import EmbeddingCache, to_float, to_half
from engine.embedding.network import (BACKBONES, DEFAULT_WEIGHTS, Backbone, Embedder, EmbeddingHead, append_coords,
                                      file_sha256, for_inference, load_head, save_head)
from engine.embedding.train import pml_triplet_loss, train_embedding, train_head
from engine.errors import FormatError


@pytest.fixture(scope="module")
def embedder():
    torch.set_num_threads(1)
    return Embedder.load("cpu")


def _frame(h=70, w=100, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (40, 120, 200)
    img[h // 4: h // 2, w // 3: w // 2] = (250, 30, 30)
    return np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)


# ---- network ---------------------------------------------------------------------------------

def test_embed_shape_dtype_and_unit_norm(embedder):
    frame = _frame(70, 100)
    frame.flags.writeable = False  # as VideoSource.frame returns them
    emb = embedder.embed(frame)
    assert emb.shape == (9, 13, embedder.dim)  # ceil(70/8), ceil(100/8)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=-1), 1.0, atol=1e-5)


def test_embed_is_deterministic_and_batch_matches(embedder):
    f0, f1 = _frame(seed=1), _frame(seed=2)
    a = embedder.embed(f0)
    np.testing.assert_array_equal(a, embedder.embed(f0))
    batch = embedder.embed_batch(np.stack([f0, f1]))
    np.testing.assert_allclose(batch[0], a, atol=1e-5)
    np.testing.assert_allclose(batch[1], embedder.embed(f1), atol=1e-5)


def test_embedding_separates_object_from_background(embedder):
    emb = embedder.embed(_frame(96, 128))
    red, blue = emb[3, 6], emb[10, 1]  # inside the red patch vs the blue background
    assert float(red @ emb[4, 7]) > float(red @ blue)


def test_shipped_weights_load_with_weights_only():
    payload = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    assert payload["format"] == "vos-pml-head/1"
    head, meta = load_head(DEFAULT_WEIGHTS)
    assert head.dim == payload["config"]["dim"] and "seed" in meta
    assert DEFAULT_WEIGHTS.stat().st_size < 2_000_000


def test_shipped_weights_match_their_record_and_the_training_defaults():
    """training.json describes the head.pt beside it, and `vos-engine train` (train_embedding's
    defaults) is the recipe that made it, so retraining reproduces what ships."""
    record = json.loads((DEFAULT_WEIGHTS.parent / "training.json").read_text())
    assert record["weights_sha256"] == file_sha256(DEFAULT_WEIGHTS)
    head, meta = load_head(DEFAULT_WEIGHTS)
    assert head.dim == record["dim"] == meta["dim"]
    defaults = {k: v.default for k, v in inspect.signature(train_embedding).parameters.items()}
    for key in ("seed", "iters", "dim", "hidden", "margin", "lr", "first_frame_ref", "train_frame_step"):
        assert record[key] == defaults[key], key


def test_head_save_load_roundtrip_and_corrupt_file(tmp_path):
    torch.manual_seed(0)
    head = EmbeddingHead(dim=8, hidden=16)
    save_head(head, tmp_path / "h.pt", meta={"seed": 0})
    loaded, meta = load_head(tmp_path / "h.pt")
    for (k, v), (k2, v2) in zip(head.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert meta == {"seed": 0}
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(FormatError):
        load_head(tmp_path / "bad.pt")
    with pytest.raises(FormatError):
        load_head(tmp_path / "missing.pt")


def test_append_coords_unit_norm_and_spatial_prior():
    emb = np.zeros((6, 8, 4), np.float32)
    emb[..., 0] = 1.0  # identical appearance everywhere: only position differs
    out = append_coords(emb, 0.5)
    assert out.shape == (6, 8, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-6)
    assert out[0, 0] @ out[0, 1] > out[0, 0] @ out[5, 7]
    out_t = append_coords(emb, 0.5, t=0.25, t_weight=0.3)
    assert out_t.shape == (6, 8, 10)
    np.testing.assert_allclose(np.linalg.norm(out_t, axis=-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(append_coords(emb, 0.0)[..., :4], emb)


# ---- cache -----------------------------------------------------------------------------------

class TinyVideo:
    """Just what EmbeddingCache needs of engine.video.VideoSource."""

    def __init__(self, path: Path, n=6, size=(40, 24)):
        self.path, self.n, self.working_size = path, n, size

    def __len__(self):
        return self.n

    def frame(self, t):
        w, h = self.working_size
        return np.full((h, w, 3), (t * 37) % 256, np.uint8)


class CountingEmbedder:
    """Deterministic fake embedder (frame value -> constant unit vector), counts its calls."""

    def __init__(self, dim=4, weights_id="fake-1"):
        self.dim, self.weights_id, self.calls = dim, weights_id, 0

    def embed(self, frame):
        self.calls += 1
        h, w = -(-frame.shape[0] // 8), -(-frame.shape[1] // 8)
        v = np.zeros((h, w, self.dim), np.float32)
        v[..., 0] = np.cos(frame[0, 0, 0] / 40.0)
        v[..., 1] = np.sin(frame[0, 0, 0] / 40.0)
        v[0, 0, :2] = (0.6, 0.8)
        return v


@pytest.fixture
def video(tmp_path):
    p = tmp_path / "clip.mp4"
    p.write_bytes(b"fake video bytes")
    return TinyVideo(p)


def test_cache_roundtrip_and_reuse(tmp_path, video):
    emb = CountingEmbedder()
    seen, prog = [], []
    with EmbeddingCache(tmp_path / "cache", video, emb) as c:
        assert not c.has(0)
        for t in c.compute(progress=lambda d, n: prog.append((d, n))):
            seen.append(t)
            assert c.has(t)
        assert seen == list(range(6)) and prog[-1] == (6, 6) and c.complete()
        for t in range(6):
            got = c.get(t)
            assert got.shape == (3, 5, 4) and got.dtype == np.float32
            np.testing.assert_array_equal(got, emb.embed(video.frame(t)).astype(np.float16).astype(np.float32))
    data = tmp_path / "cache" / cache_mod.DATA
    assert data.stat().st_size == 6 * 3 * 5 * 4 * 2
    emb2 = CountingEmbedder()
    with EmbeddingCache(tmp_path / "cache", video, emb2) as c2:  # reopened: nothing recomputed
        assert c2.complete() and list(c2.compute()) == list(range(6))
        c2.get(5)
        assert emb2.calls == 0


def test_cache_get_computes_missing_frame_and_cancel(tmp_path, video):
    emb = CountingEmbedder()
    with EmbeddingCache(tmp_path / "cache", video, emb) as c:
        c.get(4)
        assert c.has(4) and not c.has(3) and emb.calls == 1
        with pytest.raises(KeyError):
            c.get(3, compute_missing=False)
        got = list(c.compute(cancel=lambda: len(c.ready_frames()) >= 3))
        assert got[0] == 4 and len(got) == 3 and not c.complete()
        assert list(c.compute()) == [0, 1, 4, 2, 3, 5]  # ready ones first, then the rest


@pytest.mark.parametrize("change", ["weights", "video", "working_size", "frames"])
def test_cache_invalidated_when_key_changes(tmp_path, video, change):
    with EmbeddingCache(tmp_path / "cache", video, CountingEmbedder()) as c:
        list(c.compute())
    emb = CountingEmbedder()
    if change == "weights":
        emb = CountingEmbedder(weights_id="fake-2")
    elif change == "video":
        video.path.write_bytes(b"another video, other size")
    elif change == "working_size":
        video.working_size = (48, 32)
    else:
        video.n = 7
    with EmbeddingCache(tmp_path / "cache", video, emb) as c:
        assert not c.has(0)
        list(c.compute())
        assert emb.calls == len(video)


def test_cache_resumes_after_crash_and_distrusts_unsynced_frames(tmp_path, video, monkeypatch):
    monkeypatch.setattr(cache_mod, "SYNC_EVERY", 2)
    c = EmbeddingCache(tmp_path / "cache", video, CountingEmbedder())
    gen = c.compute()
    assert [next(gen) for _ in range(3)] == [0, 1, 2]  # 0, 1 durable; 2 written but not yet flagged
    os.close(c._fd), os.close(c._ready_fd)  # "kill -9": no close(), no final flush
    c._fd = None
    emb = CountingEmbedder()
    with EmbeddingCache(tmp_path / "cache", video, emb) as c2:
        assert c2.has(0) and c2.has(1) and not c2.has(2)
        assert list(c2.compute()) == [0, 1, 2, 3, 4, 5]
        assert emb.calls == 4
    # a torn header (crash in a foreign tool, disk trouble) is detected, not trusted
    (tmp_path / "cache" / cache_mod.HEADER).write_text("{ broken")
    emb3 = CountingEmbedder()
    with EmbeddingCache(tmp_path / "cache", video, emb3) as c3:
        assert not c3.has(0)
    # a data file of the wrong size (truncated) is detected too
    with EmbeddingCache(tmp_path / "cache", video, emb3) as c4:
        list(c4.compute())
    with open(tmp_path / "cache" / cache_mod.DATA, "r+b") as f:
        f.truncate(10)
    with EmbeddingCache(tmp_path / "cache", video, CountingEmbedder()) as c5:
        assert not c5.has(0)
        list(c5.compute())
    (tmp_path / "cache" / cache_mod.READY).unlink()  # a lost ready file: recompute, do not crash
    with EmbeddingCache(tmp_path / "cache", video, CountingEmbedder()) as c6:
        assert not c6.has(0)


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RSS read from /proc (Linux only)")
def test_cache_reads_keep_rss_flat(tmp_path):
    video = TinyVideo(tmp_path, n=300, size=(432, 240))  # 30 x 54 grid, D = 32: 100 KB a frame
    emb = CountingEmbedder(dim=32)
    with EmbeddingCache(tmp_path / "cache", video, emb) as c:
        for t in c.compute():
            pass
        assert (tmp_path / "cache" / cache_mod.DATA).stat().st_size == 300 * 30 * 54 * 32 * 2
        c.get(0)
        before = _rss_mb()
        for t in range(300):
            c.get(t)
        assert _rss_mb() - before < 15  # whole file is 31 MB; only the small LRU stays resident


# ---- loss ------------------------------------------------------------------------------------

def test_triplet_loss_zero_when_positive_closer_by_margin_else_positive():
    def unit(*v):
        v = torch.tensor(v, dtype=torch.float32)
        return v / v.norm()

    ref = torch.stack([unit(1, 0), unit(0, 1)])
    ref_lab = torch.tensor([1, 0])
    anchors = torch.stack([unit(1, 0.05), unit(0.05, 1)])
    lab = torch.tensor([1, 0])
    assert float(pml_triplet_loss(anchors, lab, ref, ref_lab, margin=0.3)) == 0.0
    swapped = torch.tensor([0, 1])  # now each anchor's positive is the far reference
    assert float(pml_triplet_loss(anchors, swapped, ref, ref_lab, margin=0.3)) > 1.0
    # within the margin: positive closer, but not by enough
    near = torch.stack([unit(1, 0.9)])
    assert float(pml_triplet_loss(near, torch.tensor([1]), ref, ref_lab, margin=0.3)) > 0.0
    # gradients flow
    a = anchors.clone().requires_grad_(True)
    pml_triplet_loss(a, swapped, ref, ref_lab, margin=0.3).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


@settings(max_examples=200, derandomize=True, deadline=None, database=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=9),
                  elements=st.floats(width=32, allow_nan=False) | st.sampled_from([6.1e-5, 5.96e-8, 65504.0, 65520.0])))
def test_fast_half_casts_are_numpys_bit_for_bit(a):
    """The cache's torch casts (what every frame read goes through) round exactly as numpy does, subnormals,
    overflow to infinity and negative zero included, and keep the shape."""
    half = to_half(a)
    assert half.dtype == np.float16 and half.shape == a.shape
    with np.errstate(over="ignore"):
        expected = a.astype(np.float16)
    np.testing.assert_array_equal(half.view(np.uint16), expected.view(np.uint16))
    back = to_float(half)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.view(np.uint32), half.astype(np.float32).view(np.uint32))


def test_the_inference_backbone_is_the_backbone_with_its_batch_norms_folded_in():
    """for_inference (what Embedder runs) gives the plain Backbone's maps, with no batch norm and no pad left
    at stride 1, and stays frozen."""
    plain = Backbone()
    fast = for_inference(Backbone())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, torch.nn.ZeroPad2d) for m in fast.modules()) == sum(
        isinstance(m, torch.nn.ZeroPad2d) and m.padding[0] != m.padding[1] for m in plain.modules())
    assert not fast.training and not any(p.requires_grad for p in fast.parameters())
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for a, b in zip(plain(x), fast(x)):
            assert a.shape == b.shape
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_a_head_names_its_backbone_and_the_embedder_runs_that_one(tmp_path, name):
    """The head file carries the backbone it was trained on (resources/embedding/experiments/kfold.py --backbone);
    the embedder builds that one, the cache key names it, and the maps have the channels the table says."""
    taps, channels = BACKBONES[name][2:]
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        maps = Backbone(name)(x)
    assert [m.shape[1] for m in maps] == list(channels)
    assert [m.shape[-1] for m in maps] == [96 // 8, 96 // 16, 96 // 32]
    save_head(EmbeddingHead(dim=8, hidden=16, backbone=name), tmp_path / "h.pt")
    emb = Embedder.load(weights=tmp_path / "h.pt")
    assert emb.weights_id.startswith(f"{name}-b{taps[-1]}+")
    out = emb.embed(np.zeros((64, 96, 3), np.uint8))
    assert out.shape == (8, 12, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)


def test_the_shipped_head_runs_on_lite0_under_its_old_cache_key():
    """Heads written before the backbone was named are Lite0 heads; their embeddings keep their cache key."""
    head, _ = load_head(DEFAULT_WEIGHTS)
    assert head.config["backbone"] == "lite0"
    assert Embedder.load().weights_id.startswith("lite0-b15+")


def test_late_stages_continue_the_backbone_from_its_stride_8_map_and_train_only_from_their_first_block():
    """LateStages (fine-tuning on the feature cache) gives the backbone's own maps before training; blocks before
    `first` stay frozen, and the batch norms keep their statistics even in train mode."""
    from engine.embedding.train import LateStages

    backbone = Backbone()
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        maps = backbone(x)
    late = LateStages(Backbone(), first=11)
    late.train()
    assert not any(m.training for m in late.modules())
    trainable = {int(name.split(".")[1]) for name, p in late.named_parameters() if p.requires_grad}
    assert trainable == set(range(11, 16))
    out = late((maps[0],))
    for a, b in zip(maps, out):
        torch.testing.assert_close(b, a)
    sum(o.sum() for o in out).backward()
    assert all((p.grad is not None) == p.requires_grad for p in late.parameters())
    with pytest.raises(ValueError, match="late stages of lite0 for a lite1 head"):
        train_head(Path("unused"), [], backbone="lite1", late_stages=late)


def test_a_head_carries_its_tuned_backbone_blocks_and_the_embedder_runs_them(tmp_path):
    """What fine-tuning changed in the backbone travels in the head file (weights_only) and the embedder uses it;
    weights that name no part of the backbone are refused."""
    from engine.embedding.train import LateStages

    late = LateStages(Backbone(), first=15)
    with torch.no_grad():
        for p in late.blocks["15"].parameters():
            p.mul_(0.5)
    head = EmbeddingHead(dim=8, hidden=16)
    save_head(head, tmp_path / "plain.pt")
    head.backbone_state = late.tuned_state()
    assert head.backbone_state and all(k.startswith("blocks.15.") for k in head.backbone_state)
    save_head(head, tmp_path / "tuned.pt")
    assert load_head(tmp_path / "tuned.pt")[0].backbone_state.keys() == head.backbone_state.keys()
    frame = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    plain, tuned = Embedder.load(weights=tmp_path / "plain.pt"), Embedder.load(weights=tmp_path / "tuned.pt")
    assert plain.weights_id != tuned.weights_id
    assert np.abs(plain.embed(frame) - tuned.embed(frame)).max() > 1e-3
    with pytest.raises(ValueError, match="no part of the lite0 backbone"):
        Backbone(tuned={"blocks.99.weight": torch.zeros(1)})


def _feature_cache(folder: Path, seq: str, frames: int = 3, hw=(8, 12), seed=0) -> None:
    """A tiny feature cache as `cache_features` writes it: Lite0's three maps and the cells' labels (a block of
    object cells in one corner, one padding column IGNORE)."""
    rng = np.random.default_rng(seed)
    h, w = hw
    for i, (c, s) in enumerate(zip(BACKBONES["lite0"][3], (1, 2, 4))):
        np.save(folder / f"{seq}.f{i}.npy", rng.normal(size=(frames, c, h // s, w // s)).astype(np.float16))
    labels = np.zeros((frames, h, w), np.uint8)
    labels[:, :4, :5] = 1
    labels[:, :, -1] = 255
    np.save(folder / f"{seq}.labels.npy", labels)


def test_distractors_add_another_sequences_cells_to_the_references_as_background(tmp_path, monkeypatch):
    """train_head(distractors=1) gives every pair's references a quarter of ref_cells cells (or all valid cells)
    of a frame of another sequence, labelled background; without them the references are the reference frame's
    own cells."""
    import engine.embedding.train as train_mod

    for k, seq in enumerate(("a", "b")):
        _feature_cache(tmp_path, seq, seed=k)
    seen = []
    loss = train_mod.pml_triplet_loss
    monkeypatch.setattr(train_mod, "pml_triplet_loss",
                        lambda anc, anc_lab, ref, ref_lab, margin: seen.append(ref_lab.clone()) or
                        loss(anc, anc_lab, ref, ref_lab, margin))
    kw = dict(iters=2, pairs_per_iter=2, anchors=16, log=lambda *a, **k: None)
    valid = 8 * 11  # cells of a frame that are not padding
    train_head(tmp_path, ["a", "b"], ref_cells=4096, **kw)
    assert len(seen) == 4 and all(len(r) == valid and (r == 1).sum() == 4 * 5 for r in seen)
    seen.clear()
    train_head(tmp_path, ["a", "b"], ref_cells=4096, distractors=1.0, **kw)
    assert len(seen) == 4
    for r in seen:
        assert len(r) == 2 * valid and (r[:valid] == 1).sum() == 4 * 5 and (r[valid:] == 0).all()
    seen.clear()
    train_head(tmp_path, ["a", "b"], ref_cells=64, distractors=1.0, **kw)
    assert all(len(r) == 64 + 16 for r in seen)
    with pytest.raises(ValueError, match="at least two training sequences"):
        train_head(tmp_path, ["a"], distractors=0.5, **kw)
