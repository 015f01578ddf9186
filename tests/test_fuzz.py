"""Property-based tests: random structures and values given to the project loader and the COCO, YouTube-VIS and
DAVIS importers raise only the engine's own errors (one line naming the file), never a traceback from deep inside.

Each test starts from a valid file and changes one random place (a value replaced by random JSON, or a key
removed), and reads every mask of what loads. derandomize=True: the same examples on every run, a few seconds each.
"""

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from engine.errors import EngineError
from engine.formats import load_davis
from engine.formats.coco import coco_from_dict, save_coco
from engine.formats.annotations import TrackedMasks
from engine.formats.youtube_vis import save_youtube_vis, youtube_vis_from_dict
from engine.palette import encode_id_png
from engine.project import Project
from tests.test_project import _square, _write_avi

FUZZ = settings(max_examples=100, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FUZZ_FAST = settings(FUZZ, max_examples=300)  # the JSON importers: ~10 ms an example

ODD_STRINGS = st.sampled_from(["", "0", "-1", "²", "1e9", "../../x", "/abs", "a\0b", "x" * 300, "é"])
ODD_INTS = st.sampled_from([0, -1, 1, 2, 255, 256, 10**9, 2**63, -(2**63), 40000])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), ODD_INTS, st.floats(allow_nan=True),
                    st.text(max_size=4), ODD_STRINGS)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=4) | ODD_STRINGS, inner, max_size=3), max_leaves=6)


def _mutate(data, doc):
    """Change 1-3 randomly chosen places of `doc`, each found by walking down from the top (mostly deep): its
    value replaced by random JSON, or its key deleted. Sometimes the whole document is replaced."""
    doc = json.loads(json.dumps(doc))
    if data.draw(st.integers(0, 19), label="replace all") == 0:
        return data.draw(JSON, label="whole document")
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        parent, key, node = None, None, doc
        while isinstance(node, (dict, list)) and node and (parent is None or data.draw(st.integers(0, 9)) < 8):
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            parent, key = node, data.draw(st.sampled_from(keys), label="key")
            node = parent[key]
        if parent is None:
            continue
        if isinstance(parent, dict) and data.draw(st.integers(0, 3), label="delete") == 0:
            del parent[key]
        else:
            parent[key] = data.draw(JSON, label="value")
    return doc


def _read_everything(videos):
    for v in videos:
        for t in range(v.num_frames):
            v.mask(t)


# ---- the project loader


@pytest.fixture(scope="module")
def base_project(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_project")
    p = Project.create(root / "proj", _write_avi(root / "clip.avi"), short_side=60)
    p.add_object("dog")
    p.add_object("cat")
    p.masks.set(0, _square(1, 5, 5) | _square(2, 30, 30))
    p.masks.set(4, _square(2, 10, 10))
    p.add_keyframe(1, 0)
    from engine.project import Interaction
    p.log(Interaction("click", 0, 1, True, [(3.0, 4.0)]))
    p.settings["corrected_keyframes"] = {"1": [0]}
    p.save()
    return p.folder


@FUZZ
@given(data=st.data())
def test_project_loader_raises_only_project_errors(base_project, data):
    doc = json.loads((base_project / "project.json").read_text())
    with tempfile.TemporaryDirectory(dir=base_project.parent) as tmp:
        folder = Path(tmp) / "proj"
        shutil.copytree(base_project, folder)
        (folder / "project.json").write_text(json.dumps(_mutate(data, doc)))
        try:
            p = Project.load(folder)
        except EngineError:
            return
        for t in p.masks.frames():
            p.masks.get(t)
        p.save()  # what opens also saves, and opens again
        Project.load(folder)


@FUZZ
@given(data=st.data())
def test_project_loader_finds_damaged_mask_files(base_project, data):
    with tempfile.TemporaryDirectory(dir=base_project.parent) as tmp:
        folder = Path(tmp) / "proj"
        shutil.copytree(base_project, folder)
        victim = sorted((folder / "masks").iterdir())[data.draw(st.integers(0, 1))]
        raw = bytearray(victim.read_bytes())
        cut = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans(), label="flip a byte"):
            raw[cut % len(raw)] ^= data.draw(st.integers(1, 255))
        else:
            del raw[cut:]
        victim.write_bytes(bytes(raw))
        with pytest.raises(EngineError, match=str(victim)):
            Project.load(folder)


# ---- COCO and YouTube-VIS


def _valid_tracked():
    frames = [_square(1, 1, 1, size=(12, 9)) | _square(2, 6, 5, size=(12, 9)), _square(2, 0, 0, size=(12, 9))]
    return TrackedMasks("seq", (12, 9), {1: "dog", 2: "cat"}, frames)


@pytest.fixture(scope="module")
def valid_json(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_json")
    return {"coco": json.loads(save_coco([_valid_tracked()], root / "coco.json").read_text()),
            "youtube-vis": json.loads(save_youtube_vis([_valid_tracked()], root / "yvis.json").read_text())}


@FUZZ_FAST
@given(data=st.data())
def test_coco_importer_raises_only_format_errors(valid_json, data):
    doc = _mutate(data, valid_json["coco"])
    try:
        _read_everything(coco_from_dict(doc, Path("fuzz.json")) if isinstance(doc, dict) else [])
    except EngineError as e:
        assert "fuzz.json" in str(e)


@FUZZ_FAST
@given(data=st.data())
def test_youtube_vis_importer_raises_only_format_errors(valid_json, data):
    doc = _mutate(data, valid_json["youtube-vis"])
    try:
        _read_everything(youtube_vis_from_dict(doc, Path("fuzz.json")) if isinstance(doc, dict) else [])
    except EngineError as e:
        assert "fuzz.json" in str(e)


# ---- DAVIS


def _png(kind, w, h, rng):
    if kind == "palette":
        return encode_id_png(rng.integers(0, 4, (h, w)).astype(np.uint8))
    buf = io.BytesIO()
    if kind == "grey16":
        Image.fromarray(rng.integers(0, 65535, (h, w)).astype(np.uint16)).save(buf, format="PNG")
    elif kind == "rgb":
        Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8)).save(buf, format="PNG")
    elif kind == "binary":
        Image.fromarray((rng.random((h, w)) < 0.5).astype(np.uint8) * 255).save(buf, format="PNG")
    else:
        return bytes(rng.integers(0, 256, 40).astype(np.uint8))
    return buf.getvalue()


PNG_FILE = st.tuples(st.sampled_from(["palette", "palette", "grey16", "rgb", "binary", "garbage"]),
                     st.integers(1, 12), st.integers(1, 12), st.integers(0, 10**6), st.integers(0, 200))


@FUZZ
@given(frames=st.lists(PNG_FILE, min_size=1, max_size=4), meta=st.one_of(st.none(), JSON, st.just({"videos": {
    "seq": {"objects": {"1": {"name": "x"}, "²": {}, "300": {"name": 5}}}}})), layout=st.sampled_from(
    ["root", "480p", "annotations", "sequence"]))
def test_davis_importer_raises_only_format_errors(tmp_path_factory, frames, meta, layout):
    root = tmp_path_factory.mktemp("davis")
    seq = root / "Annotations" / ("480p" if layout == "480p" else "") / "seq"
    seq.mkdir(parents=True)
    for t, (kind, w, h, seed, cut) in enumerate(frames):
        data = _png(kind, w, h, np.random.default_rng(seed))
        (seq / f"{t:05d}.png").write_bytes(data[:len(data) - cut] if cut and kind != "garbage" else data)
    if meta is not None:
        (root / "meta.json").write_text(json.dumps(meta))
    src = {"root": root, "480p": root, "annotations": root / "Annotations", "sequence": seq}[layout]
    try:
        _read_everything(load_davis(src))
    except EngineError as e:
        assert str(root) in str(e)
