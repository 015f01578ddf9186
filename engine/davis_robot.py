"""`interactive-eval --user robot`: the DAVIS interactive protocol, with the official `davisinteractive` robot.

Each round the robot (davisinteractive's InteractiveScribblesRobot, defaults) looks at the worst frame (lowest mean
Jaccard over objects) and draws scribbles on its error regions: a scribble of object k on its misses, a scribble of
the background (id 0) on false alarms. They become `Session.scribble` calls: positive for object k, negative for
the object predicted under a background scribble. Then the engine re-propagates from that frame both ways and every
frame is scored. Round 1 starts from empty masks, as the protocol's first interaction when no human scribble is given
(DAVIS 2016 train has none).

The worst frame is picked here (the robot's own rule, mean Jaccard over objects, first frame on ties) and the robot
is handed that frame alone, so it does not copy the whole sequence into int64 arrays every round.

davisinteractive 1.0.4 (2020) uses `np.int`, `np.float` and `networkx.from_scipy_sparse_matrix`, which numpy 1.24
and networkx 3.0 removed; `install_compat_names()` provides them (only the missing ones) before the robot is
imported, and only when the robot is used. Install: `pip install Cython absl-py && pip install --no-deps
--no-build-isolation davisinteractive` (its setup.py imports numpy and Cython, and its metadata pins
scikit-learn==0.20.3, which does not build on Python 3.11; the robot itself runs on today's scikit-learn).
"""

import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from engine.errors import EngineError
from engine.evaluation import (
    MaskReader, add_ground_truth_objects, corrected_frame_changes, default_session_factory, embedded_sessions,
    jf_per_frame, jf_summary, json_safe, load_sequences, object_ids_of, regressions, score_frames,
)
from engine.metrics import jaccard

INSTALL = "pip install Cython absl-py && pip install --no-deps --no-build-isolation davisinteractive"


def install_compat_names() -> None:
    """Give numpy and networkx the names davisinteractive 1.0.4 still calls, where they lack them."""
    import networkx

    for name, value in (("int", int), ("float", float)):
        if not hasattr(np, name):
            setattr(np, name, value)
    if not hasattr(networkx, "from_scipy_sparse_matrix"):
        networkx.from_scipy_sparse_matrix = networkx.from_scipy_sparse_array


def make_robot():
    """The official robot with its default settings (EngineError naming the install line when it is missing).

    Its skeletons come from skimage's `medial_axis`, which breaks ties at random from fresh OS entropy, so the
    same masks would give other scribbles on every call; here the ties are broken by a fixed seed, so a run
    repeats (README: what the spread was)."""
    install_compat_names()
    try:
        from davisinteractive.robot import InteractiveScribblesRobot, interactive_robot
    except ImportError as e:
        raise EngineError(None, f"--user robot needs the davisinteractive package ({e}); install it with: {INSTALL}")
    from skimage.morphology import medial_axis

    interactive_robot.medial_axis = partial(medial_axis, rng=0)
    return InteractiveScribblesRobot()


def strokes(scribbles: list[dict], pred_ids: np.ndarray) -> list[tuple[int, bool, np.ndarray]]:
    """The robot's scribbles on one frame as (ground-truth object id, positive, (N, 2) x, y pixels) strokes.

    scribbles: the robot's paths of that frame ({"path": [[x, y], ...] in 0..1 of width/height, "object_id"});
    pred_ids: (H, W) prediction ids at ground-truth size, which names the object a background scribble removes
    (the id most predicted under it; a scribble over nothing predicted is dropped)."""
    h, w = pred_ids.shape
    out = []
    for s in scribbles:
        path = np.asarray(s["path"], np.float64).reshape(-1, 2) * (w, h)
        if len(path) == 0:
            continue
        k = int(s["object_id"])
        if k > 0:
            out.append((k, True, path))
            continue
        cols = np.clip(path[:, 0].astype(int), 0, w - 1)
        rows = np.clip(path[:, 1].astype(int), 0, h - 1)
        under = pred_ids[rows, cols]
        under = under[under > 0]
        if under.size:
            out.append((int(np.bincount(under).argmax()), False, path))
    return out


def run_robot(
    davis_root: str | Path,
    split: str | None = "train",
    sequences: Sequence[str] | None = None,
    rounds: int = 8,
    make_session_fn: Callable[[Path, Path], object] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """The JSON dict of `interactive-eval --user robot`: J&F per round (1..rounds), engine and robot seconds.

    `rounds[i].seconds`: the engine's mean time per sequence that round (scribbles + propagation); `robot_seconds`
    the robot's. progress(done, total) after each sequence."""
    robot = make_robot()
    make = make_session_fn or default_session_factory()
    seqs = load_sequences(davis_root, split, sequences)
    per_round: list[list] = [[] for _ in range(rounds)]
    seconds = np.zeros((rounds, len(seqs)))
    robot_seconds = np.zeros((rounds, len(seqs)))
    per_seq: dict[str, list[dict]] = {}
    timing = {"embed_seconds": 0.0}
    for si, seq, session in embedded_sessions(seqs, make, "vos-robot", timing):
        per_seq[seq.name] = []
        for r, (scores, secs, rsecs, frame, n, changes) in enumerate(_robot_rounds(session, seq, robot, rounds)):
            seconds[r, si], robot_seconds[r, si] = secs, rsecs
            per_round[r] += scores
            per_seq[seq.name].append({"round": r + 1, **jf_summary(scores), "seconds": secs, "frame": frame,
                                      "scribbles": n, "corrected_frames": changes})
        if progress is not None:
            progress(si + 1, len(seqs))
    out_rounds = [{"round": r + 1, **jf_summary(per_round[r]), "seconds": float(seconds[r].mean()),
                   "robot_seconds": float(robot_seconds[r].mean())} for r in range(rounds)]
    return json_safe({"user": "robot", "split": split, "n_sequences": len(seqs), "rounds": out_rounds,
                      "embed_seconds": timing["embed_seconds"], "sequences": per_seq, **regressions(per_seq)})


def _robot_rounds(session, seq, robot, rounds: int):
    """Per round of one sequence: (scores of every frame, engine seconds, robot seconds, frame, scribbles applied,
    what they did to that frame: `corrected_frame_changes`)."""
    gts = [seq.ground_truth(t) for t in range(len(seq))]
    object_ids = object_ids_of(gts[0])
    work_h, work_w = session.mask(0).shape
    to_session, to_gt = add_ground_truth_objects(session, object_ids)
    reader = MaskReader(session, to_gt, gts[0].shape)
    preds = [reader(t) for t in range(len(seq))]
    J = [np.mean([jaccard(p == k, g == k) for k in object_ids]) for p, g in zip(preds, gts)]
    jf = None  # round 1 starts from empty masks: no change to report
    for _ in range(rounds):
        t = int(np.argmin(J))
        start = time.perf_counter()
        drawn = robot.interact(seq.name, preds[t][None], gts[t][None], nb_objects=len(object_ids), frame=0)
        rsecs = time.perf_counter() - start
        applied = strokes(drawn["scribbles"][0], preds[t])
        start = time.perf_counter()
        for k, positive, path in applied:
            points = path * (work_w / gts[0].shape[1], work_h / gts[0].shape[0])
            session.scribble(t, to_session[k], points, positive=positive)
        if applied:
            for _ in session.propagate(t, direction="both"):
                pass
        secs = time.perf_counter() - start
        preds = [reader(t) for t in range(len(seq))]
        scores = score_frames(seq.name, seq.frame_names, gts.__getitem__, preds.__getitem__, object_ids,
                              skip_first_last=False)
        J = np.mean([o.J for o in scores], axis=0)
        before, jf = jf, jf_per_frame(scores, len(seq))
        yield scores, secs, rsecs, t, len(applied), corrected_frame_changes([t] if applied else [], before, jf)
