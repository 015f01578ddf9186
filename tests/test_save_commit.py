"""A save commits whole: after a SIGKILL at any instant, or a failure after any file write, the project opens as
exactly one complete save, frame by frame and object by object (engine/project.py describes the design)."""

import json
import multiprocessing
import os
import shutil
import time

import numpy as np
import pytest

from engine.errors import StorageError
from engine.project import PROJECT_FILE, Project
from engine.video import open_video
from tests.test_project import _write_avi

SEED = 11
SIZE = (80, 60)  # working size of the 160x120 test clip at short_side=60


def apply_round(p: Project, k: int) -> None:
    """Round k's edits, a function of (k, the state after round k-1): 4-6 frames changed, sometimes one deleted,
    every 5th round an object renamed, every 7th a new object."""
    rng = np.random.default_rng([SEED, k])
    if k % 7 == 0 and p.next_object_id < 20:
        p.add_object(f"object {k}")
    ids = sorted(p.objects)
    if k % 5 == 0:
        p.update_object(ids[k % len(ids)], name=f"renamed in round {k}")
    for t in rng.choice(len(p.video), size=int(rng.integers(4, 7)), replace=False).tolist():
        if rng.random() < 0.15:
            p.masks.delete(t)
            continue
        m = np.zeros((SIZE[1], SIZE[0]), np.uint8)
        for _ in range(3):
            x, y = int(rng.integers(0, 70)), int(rng.integers(0, 50))
            m[y:y + int(rng.integers(3, 12)), x:x + int(rng.integers(3, 12))] = rng.choice(ids)
        m[rng.random(m.shape) < 0.02] = 0  # noise: masks of a few kB, so saves take real time
        p.masks.set(t, m)
    p.settings["round"] = k


class Model:
    """The expected state after each round, replayed in memory on a project that is never saved."""

    def __init__(self, video):
        self.p = Project(video.parent / "unused", open_video(video, 60), "clip.avi")
        self.p.add_object("first")
        self.states = [self._state()]

    def _state(self):
        p = self.p
        return ({i: (o.name, o.category, o.color) for i, o in p.objects.items()}, p.next_object_id,
                {t: p.masks.get(t) for t in p.masks.frames()})

    def state(self, k: int):
        while len(self.states) <= k:
            apply_round(self.p, len(self.states))
            self.states.append(self._state())
        return self.states[k]


def _state_on_disk(folder):
    q = Project.load(folder)
    k = q.settings.get("round", 0)
    return k, ({i: (o.name, o.category, o.color) for i, o in q.objects.items()}, q.next_object_id,
               {t: q.masks.get(t) for t in q.masks.frames()})


def _assert_same(got, want, k):
    (objs, nxt, masks), (wobjs, wnxt, wmasks) = got, want
    assert objs == wobjs and nxt == wnxt, f"round {k}: objects differ"
    assert sorted(masks) == sorted(wmasks), f"round {k}: frames with masks differ"
    for t in masks:
        assert np.array_equal(masks[t], wmasks[t]), f"round {k}: frame {t} mixes saves"


def _unlisted(folder) -> list[str]:
    """Files a killed save left: not listed in the committed project.json."""
    doc = json.loads((folder / PROJECT_FILE).read_text())
    listed = {e["file"] for e in doc["mask_files"].values()}
    masks = folder / "masks"
    return sorted(n for n in os.listdir(masks) if n not in listed) if masks.is_dir() else []


def save_forever(folder: str) -> None:
    """The child: open the project, then edit and save round after round until killed."""
    p = Project.load(folder)
    k = p.settings.get("round", 0)
    while True:
        k += 1
        apply_round(p, k)
        p.save()


@pytest.fixture
def start(tmp_path):
    video = _write_avi(tmp_path / "clip.avi")
    p = Project.create(tmp_path / "proj", video, short_side=60)
    p.add_object("first")
    p.save()
    return p.folder, Model(video)


@pytest.mark.parametrize("kills", [30, pytest.param(100, marks=pytest.mark.slow)])
def test_sigkill_at_random_moments_leaves_one_complete_save(start, kills):
    folder, model = start
    ctx = multiprocessing.get_context("forkserver")  # children fork from a clean, single-threaded server
    ctx.set_forkserver_preload(["engine.project", "tests.test_save_commit"])
    rng = np.random.default_rng(0)
    rounds, interrupted = [0], 0
    for _ in range(kills):
        child = ctx.Process(target=save_forever, args=(str(folder),))
        child.start()
        time.sleep(float(rng.uniform(0.05, 0.2)))
        child.kill()  # SIGKILL: no cleanup of any kind runs
        child.join()
        interrupted += bool(_unlisted(folder))
        k, got = _state_on_disk(folder)
        assert k >= rounds[-1], "a later open went back to an earlier save"
        _assert_same(got, model.state(k), k)
        assert _unlisted(folder) == [], "opening removes what the killed save left"
        rounds.append(k)
    assert rounds[-1] >= kills // 3, f"the children saved too rarely to test anything: {rounds}"
    assert interrupted >= kills // 5, f"only {interrupted} of {kills} kills landed inside a save"


class Crash(BaseException):
    """A crash right after a file operation: nothing in the save gets to clean up."""


@pytest.mark.parametrize("failure", [Crash, OSError])
def test_failure_after_each_file_write_leaves_one_complete_save(start, monkeypatch, failure):
    folder, model = start
    for k in (1, 2):  # saved state: round 2
        p = Project.load(folder)
        apply_round(p, k)
        p.save()
    base = folder.parent / "base"
    shutil.copytree(folder, base)
    real_replace, real_unlink = os.replace, os.unlink
    attempts, done = [0], []

    def counting(real):
        """An OSError fails the operation itself (as a full disk would); a Crash comes right after it."""
        def op(*args, **kwargs):
            attempts[0] += 1
            if failure is OSError and attempts[0] == fail_after:
                raise OSError(28, "No space left on device")
            real(*args, **kwargs)
            done.append(os.path.basename(args[-1] if real is real_replace else args[0]))
            if failure is Crash and attempts[0] == fail_after:
                raise Crash()
        return op

    fail_after, n_ops, step = 0, None, 0
    while n_ops is None or fail_after < n_ops:
        fail_after, attempts[0], done = fail_after + 1, 0, []
        shutil.rmtree(folder)
        shutil.copytree(base, folder)
        p = Project.load(folder)
        apply_round(p, 3)
        monkeypatch.setattr(os, "replace", counting(real_replace))
        monkeypatch.setattr(os, "unlink", counting(real_unlink))
        try:
            p.save()
            n_ops = attempts[0] if n_ops is None else n_ops  # the first run without a failure ran them all
        except (Crash, StorageError):
            pass
        finally:
            monkeypatch.setattr(os, "replace", real_replace)
            monkeypatch.setattr(os, "unlink", real_unlink)
        committed = PROJECT_FILE in done
        if failure is OSError and not committed:  # an error before the commit cleans up at once
            assert _unlisted(folder) == [] and p.dirty
        k, got = _state_on_disk(folder)
        assert k == (3 if committed else 2), f"failure at operation {fail_after} (after {done})"
        _assert_same(got, model.state(k), k)
        if not committed:
            p.save()  # the same project object saves fine once the failure is gone
            k, got = _state_on_disk(folder)
            assert k == 3
            _assert_same(got, model.state(3), 3)
        step += 1
    assert n_ops >= 6 and step >= n_ops  # a failure at each of the mask writes, project.json, the deletions


def test_schema_1_sample_opens_works_and_saves_as_schema_2(tmp_path):
    from engine.project import open_sample_copy

    p = open_sample_copy(tmp_path / "sample")
    assert json.loads((p.folder / PROJECT_FILE).read_text())["schema_version"] == 1
    assert not p.dirty
    first = p.masks.get(0)
    p.masks.set(5, first)
    p.save()
    doc = json.loads((p.folder / PROJECT_FILE).read_text())
    assert doc["schema_version"] == 2 and sorted(doc["mask_files"]) == ["0", "5"]
    assert sorted(os.listdir(p.folder / "masks")) == sorted(e["file"] for e in doc["mask_files"].values())
    q = Project.load(p.folder)
    assert np.array_equal(q.masks.get(0), first) and np.array_equal(q.masks.get(5), first)
    assert q.objects == p.objects and q.keyframes == p.keyframes and q.interactions == p.interactions


def test_save_writes_only_the_changed_frames(start):
    folder, _ = start
    p = Project.load(folder)
    for t in range(12):
        p.masks.set(t, np.full((SIZE[1], SIZE[0]), 1, np.uint8))
    p.save()
    before = {n: (folder / "masks" / n).stat().st_mtime_ns for n in os.listdir(folder / "masks")}
    p.masks.set(4, np.zeros((SIZE[1], SIZE[0]), np.uint8))
    p.save()
    after = {n: (folder / "masks" / n).stat().st_mtime_ns for n in os.listdir(folder / "masks")}
    assert len(set(after) - set(before)) == 1 and len(set(before) - set(after)) == 1
    assert all(after[n] == before[n] for n in set(after) & set(before))  # 11 files untouched


@pytest.mark.skipif(os.name != "posix", reason="the save lock is a POSIX advisory lock")
def test_opening_during_another_save_keeps_that_saves_files(start):
    import fcntl

    folder, _ = start
    in_progress = folder / "masks" / "00003.0123456789abcdef.png"  # written, not yet committed
    in_progress.parent.mkdir(exist_ok=True)
    in_progress.write_bytes(b"a save in progress")
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what another process's save holds
        Project.load(folder)
        assert in_progress.exists()
    finally:
        os.close(fd)
    Project.load(folder)
    assert not in_progress.exists()  # with no save running, an unlisted file is a leftover
