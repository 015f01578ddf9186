"""DAVIS-style evaluation: score predictions, run the engine semi-supervised or with a simulated user.

Scores follow the official DAVIS tool (davisvideochallenge/davis2017-evaluation, semi-supervised task):
objects are the ids 1..max of a sequence's first ground-truth frame; the first and the last frame are left
out; each object gets per-frame J and F and their mean/recall/decay; global means are over all objects
(not over sequences). Differences, all on inputs the official tool rejects or crashes on: a missing
prediction frame scores as an empty mask, prediction ids without a ground-truth object are ignored, and
for DAVIS 2016 ground truth (binary 0/255) every non-zero prediction pixel is the object, as the DAVIS 2016
tool reads it. Ground-truth void pixels (index 255 in indexed PNGs) count as background, as in the official
semi-supervised code.

Layout of a DAVIS root: JPEGImages/480p/<seq>/00000.jpg, Annotations/480p/<seq>/00000.png and a split list,
ImageSets/480p/<split>.txt (DAVIS 2016: "/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png"
per line) or ImageSets/2017/<split>.txt (or ImageSets/2016/<split>.txt) with one sequence name per line.
"""

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.errors import FormatError
from engine.metrics import SequenceStats, boundary_f, jaccard, sequence_statistics
from engine.upsample import resize_ids

RESOLUTION = "480p"
SPLIT_FOLDERS = ("480p", "2017", "2016")  # ImageSets/<folder>/<split>.txt, first found wins
VOID_ID = 255
Progress = Callable[[int, int], None]  # progress(done, total)


# ----------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class DavisSequence:
    """One sequence of a DAVIS root: its frames (sorted by name) and their ground-truth files."""

    name: str
    image_dir: Path
    frame_names: tuple[str, ...]  # file stems, "00000", ...
    annotation_dir: Path
    binary: bool  # DAVIS 2016 style ground truth (grey 0/255): one object, all non-zero

    def __len__(self) -> int:
        return len(self.frame_names)

    def ground_truth(self, t: int) -> np.ndarray:
        """(H, W) uint8 ids of frame t (void -> 0; binary ground truth -> 0/1)."""
        return read_ground_truth(self.annotation_dir / f"{self.frame_names[t]}.png")

    def object_ids(self) -> list[int]:
        """Objects scored, as the official tool: 1..max id of the first ground-truth frame."""
        return object_ids_of(self.ground_truth(0))


def object_ids_of(first_gt: np.ndarray) -> list[int]:
    """Object ids of a sequence from its first ground-truth frame ((H, W) uint8 ids): 1..max, as official."""
    return list(range(1, int(first_gt.max()) + 1))


def split_file(davis_root: str | Path, split: str) -> Path:
    """The split list of a DAVIS root: ImageSets/480p|2017|2016/<split>.txt, whichever exists first."""
    root = Path(davis_root)
    candidates = [root / "ImageSets" / folder / f"{split}.txt" for folder in SPLIT_FOLDERS]
    for c in candidates:
        if c.is_file():
            return c
    raise FormatError(candidates[0], f"split {split!r} not found (also looked for {', '.join(str(c) for c in candidates[1:])})")


def list_sequences(davis_root: str | Path, split: str) -> list[str]:
    """Sequence names of a split, in file order, each once (DAVIS 2016 lists every frame of a sequence)."""
    path = split_file(davis_root, split)
    names: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(path, f"cannot read split list ({e})") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        first = line.split()[0]
        if "/" in first:  # "/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png"
            parts = [p for p in first.split("/") if p]
            if len(parts) < 2:
                raise FormatError(path, f"line {n}: cannot read a sequence name from {line!r}")
            name = parts[-2]
        else:
            name = first
        if name not in names:
            names.append(name)
    if not names:
        raise FormatError(path, "split list names no sequence")
    return names


def load_sequences(davis_root: str | Path, split: str | None = "train", sequences: Sequence[str] | None = None) -> list[DavisSequence]:
    """The sequences to evaluate: `sequences` if given (the split list is then not needed), else the split's."""
    root = Path(davis_root)
    if not root.is_dir():
        raise FormatError(root, "DAVIS root folder not found")
    img_root = root / "JPEGImages" / RESOLUTION
    ann_root = root / "Annotations" / RESOLUTION
    for folder in (img_root, ann_root):
        if not folder.is_dir():
            raise FormatError(folder, "folder missing: not a DAVIS root")
    if sequences is None:
        if split is None:
            raise ValueError("give a split or a list of sequences")
        sequences = list_sequences(root, split)
    out = []
    for name in sequences:
        img_dir, ann_dir = img_root / name, ann_root / name
        if not img_dir.is_dir():
            raise FormatError(img_dir, f"frames of sequence {name!r} not found")
        if not ann_dir.is_dir():
            raise FormatError(ann_dir, f"ground truth of sequence {name!r} not found")
        frames = sorted(p.stem for p in img_dir.glob("*.jpg")) or sorted(p.stem for p in img_dir.glob("*.png"))
        if not frames:
            raise FormatError(img_dir, "no .jpg frames")
        for f in frames:
            if not (ann_dir / f"{f}.png").is_file():
                raise FormatError(ann_dir / f"{f}.png", f"ground truth missing for frame {f} of {name!r}")
        binary = _is_binary_png(ann_dir / f"{frames[0]}.png")
        out.append(DavisSequence(name, img_dir, tuple(frames), ann_dir, binary))
    return out


def read_ground_truth(path: str | Path) -> np.ndarray:
    """(H, W) uint8 ids of a ground-truth PNG: indexed -> indices with void 255 -> 0; grey 0/255 -> 0/1."""
    im = _open_png(path)
    if im.mode == "P":
        ids = np.array(im, dtype=np.uint8)
        ids[ids == VOID_ID] = 0
        return ids
    if im.mode in ("1", "L", "LA", "I", "I;16"):  # DAVIS 2016: grey 0/255, every non-zero pixel is the object
        grey = im.getchannel(0) if im.mode == "LA" else im
        return (np.array(grey) > 0).astype(np.uint8)
    from engine.palette import read_id_png  # RGB drawn with the VOC palette

    return read_id_png(path)


def read_prediction(path: str | Path, shape: tuple[int, int], binary: bool) -> np.ndarray:
    """(H, W) uint8 ids of a prediction PNG (indexed, or 0/255 grey); a missing file is an empty mask.

    binary: the ground truth is DAVIS 2016 style, so every non-zero pixel is the object (id 1).
    """
    path = Path(path)
    if not path.is_file():
        return np.zeros(shape, dtype=np.uint8)
    from engine.palette import read_id_png

    ids = read_id_png(path)
    if ids.shape != tuple(shape):
        raise FormatError(path, f"prediction is {ids.shape[1]}x{ids.shape[0]}, ground truth is {shape[1]}x{shape[0]}")
    return (ids > 0).astype(np.uint8) if binary else ids


def _open_png(path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
        return im
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise FormatError(path, f"cannot read annotation PNG ({e})") from None


def _is_binary_png(path: Path) -> bool:
    return _open_png(path).mode in ("1", "L", "LA", "I", "I;16")


# ----------------------------------------------------------------------------------------------- scores


LEAST_SURE_PICKS = 5  # frames the least-sure ranking is judged on (the first few a user jumps to)


@dataclass
class ObjectScores:
    """Per-frame J and F of one object of one sequence, over the frames scored (`frames`, file stems)."""

    sequence: str
    object_id: int
    frames: list[str]
    J: np.ndarray  # (n_frames,) float64
    F: np.ndarray  # (n_frames,) float64

    @property
    def J_stats(self) -> SequenceStats:
        return sequence_statistics(self.J)

    @property
    def F_stats(self) -> SequenceStats:
        return sequence_statistics(self.F)


@dataclass
class EvaluationResult:
    """Scores of a run; global figures are means over all objects, as the official tool's."""

    objects: list[ObjectScores]
    split: str | None = None
    seconds_per_frame: float | None = None  # engine time per frame when the engine produced the masks
    timing: dict = field(default_factory=dict)
    least_sure: dict = field(default_factory=dict)  # {sequence: least_sure_check(...)} of engine runs

    def sequences(self) -> list[str]:
        return list(dict.fromkeys(o.sequence for o in self.objects))

    @property
    def J_mean(self) -> float:
        return _mean([o.J_stats.mean for o in self.objects])

    @property
    def F_mean(self) -> float:
        return _mean([o.F_stats.mean for o in self.objects])

    @property
    def JF_mean(self) -> float:
        return (self.J_mean + self.F_mean) / 2

    def summary(self, objects: list[ObjectScores] | None = None) -> dict:
        """J/F mean, recall, decay and JF over `objects` (default all): means of per-object statistics."""
        objects = self.objects if objects is None else objects
        out = {}
        for m in ("J", "F"):
            stats = [getattr(o, m + "_stats") for o in objects]
            for s in ("mean", "recall", "decay"):
                out[f"{m}_{s}"] = _mean([getattr(x, s) for x in stats])
        out["JF_mean"] = (out["J_mean"] + out["F_mean"]) / 2
        return out

    def to_json(self) -> dict:
        """JSON-ready dict: global J_mean/F_mean/JF_mean (+ recall, decay), `sequences.{name}.J/F/JF/...`."""
        g = self.summary()
        out: dict = {"split": self.split, "n_sequences": len(self.sequences()), "n_objects": len(self.objects)}
        out.update({"JF_mean": g["JF_mean"], "J_mean": g["J_mean"], "F_mean": g["F_mean"]})
        out.update({k: v for k, v in g.items() if k not in out})
        seqs = {}
        for name in self.sequences():
            objs = [o for o in self.objects if o.sequence == name]
            s = self.summary(objs)
            entry = {"J": s["J_mean"], "F": s["F_mean"], "JF": s["JF_mean"]}
            entry.update({k: s[k] for k in ("J_recall", "J_decay", "F_recall", "F_decay")})
            entry["n_frames"] = len(objs[0].frames) if objs else 0
            entry["objects"] = {}
            for o in objs:
                js, fs = o.J_stats, o.F_stats
                entry["objects"][str(o.object_id)] = {
                    "J": js.mean, "F": fs.mean, "JF": (js.mean + fs.mean) / 2, "J_recall": js.recall,
                    "J_decay": js.decay, "F_recall": fs.recall, "F_decay": fs.decay,
                }
            seqs[name] = entry
        out["sequences"] = seqs
        if self.seconds_per_frame is not None:
            out["seconds_per_frame"] = self.seconds_per_frame
        if self.timing:
            out["timing"] = dict(self.timing)
        if self.least_sure:
            out["least_sure"] = self.least_sure_summary()
        return json_safe(out)

    def least_sure_summary(self) -> dict:
        """Means over sequences of least_sure_check's figures, and the per-sequence ones."""
        checks = self.least_sure.values()
        out = {k: _mean([c[k] for c in checks]) for k in ("picked_JF", "worst_JF", "JF")}
        out["picks"] = LEAST_SURE_PICKS
        out["sequences"] = dict(self.least_sure)
        return out

    def table(self) -> str:
        """Per-sequence text table (means over a sequence's objects), then the global line."""
        head = f"{'sequence':<24}{'objs':>5}{'frames':>7}{'J&F':>8}{'J':>8}{'J-rec':>8}{'J-dec':>8}{'F':>8}{'F-rec':>8}{'F-dec':>8}"
        lines = [head, "-" * len(head)]

        def row(name, objs):
            s = self.summary(objs)
            n = len(objs[0].frames) if objs else 0
            vals = [s[k] for k in ("JF_mean", "J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay")]
            return f"{name:<24}{len(objs):>5}{n:>7}" + "".join(f"{v:>8.3f}" for v in vals)

        for name in self.sequences():
            lines.append(row(name[:23], [o for o in self.objects if o.sequence == name]))
        lines.append("-" * len(head))
        g = self.summary()
        vals = [g[k] for k in ("JF_mean", "J_mean", "J_recall", "J_decay", "F_mean", "F_recall", "F_decay")]
        lines.append(f"{'mean over objects':<24}{len(self.objects):>5}{'':>7}" + "".join(f"{v:>8.3f}" for v in vals))
        if self.seconds_per_frame is not None:
            lines.append(f"engine time: {self.seconds_per_frame * 1000:.1f} ms/frame")
        if self.least_sure:
            ls = self.least_sure_summary()
            lines.append(f"least-sure ranking: its {LEAST_SURE_PICKS} picks score J&F {ls['picked_JF']:.3f} "
                         f"(all frames {ls['JF']:.3f}, the {LEAST_SURE_PICKS} worst {ls['worst_JF']:.3f})")
        return "\n".join(lines)


def score_frames(
    sequence: str,
    frame_names: Sequence[str],
    gt_fn: Callable[[int], np.ndarray],
    pred_fn: Callable[[int], np.ndarray],
    object_ids: Sequence[int],
    skip_first_last: bool = True,
) -> list[ObjectScores]:
    """Per-object J/F over a sequence, one frame in memory at a time.

    gt_fn(t), pred_fn(t): (H, W) uint8 id masks of frame t (same shape). skip_first_last: the semi-supervised
    protocol, leaving out frame 0 (given) and the last frame, as the official tool does.
    """
    n = len(frame_names)
    ts = list(range(1, n - 1)) if skip_first_last else list(range(n))
    J = np.zeros((len(object_ids), len(ts)))
    F = np.zeros((len(object_ids), len(ts)))
    for i, t in enumerate(ts):
        gt, pred = gt_fn(t), pred_fn(t)
        if gt.shape != pred.shape:
            raise ValueError(f"{sequence} frame {frame_names[t]}: prediction {pred.shape} != ground truth {gt.shape}")
        for j, k in enumerate(object_ids):
            p, g = pred == k, gt == k
            J[j, i] = jaccard(p, g)
            F[j, i] = boundary_f(p, g)
    names = [frame_names[t] for t in ts]
    return [ObjectScores(sequence, int(k), names, J[j], F[j]) for j, k in enumerate(object_ids)]


def score_predictions(
    davis_root: str | Path, predictions_dir: str | Path, split: str | None = "train", sequences: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Score PRED_DIR/<seq>/<frame>.png (indexed or 0/255 PNGs) against a DAVIS root, semi-supervised protocol.

    progress(done, total) after each sequence."""
    pred_root = Path(predictions_dir)
    if not pred_root.is_dir():
        raise FormatError(pred_root, "predictions folder not found")
    objects: list[ObjectScores] = []
    seqs = load_sequences(davis_root, split, sequences)
    for done, seq in enumerate(seqs, 1):
        pred_dir = pred_root / seq.name
        if not pred_dir.is_dir():
            raise FormatError(pred_dir, f"no predictions for sequence {seq.name!r}")
        if not any((pred_dir / f"{name}.png").is_file() for name in seq.frame_names):
            raise FormatError(pred_dir, f"no file named as the ground truth frames ({seq.frame_names[0]}.png, ...)")
        gt0 = seq.ground_truth(0)
        object_ids = object_ids_of(gt0)

        def pred_fn(t, seq=seq, pred_dir=pred_dir, shape=gt0.shape):
            return read_prediction(pred_dir / f"{seq.frame_names[t]}.png", shape, seq.binary)

        objects += score_frames(seq.name, seq.frame_names, seq.ground_truth, pred_fn, object_ids)
        if progress is not None:
            progress(done, len(seqs))
    return EvaluationResult(objects, split=split)


# ------------------------------------------------------------------------------------- driving the engine


def default_session_factory(refiner: str | None = None, embedding_cache: str | Path | None = None,
                            config=None, click_model: str | Path | None = None,
                            embedder=None) -> Callable[[Path, Path], object]:
    """make_session_fn(project_dir, video_path) -> engine.session.Session (a fresh project).

    embedding_cache: a folder where each video's embeddings are kept between runs, in
    DIR/<video folder name>-<embedding weights id>/ (EmbeddingCache checks the video's fingerprint and
    the weights there, so a changed video or new weights are re-embedded, never trusted); the
    network is then loaded once for all sequences. config: the PropagationConfig of every session.
    click_model: the weights of another click model for every session (a k-fold one), loaded here so that a
    bad file fails before any sequence; None: the shipped one. embedder: the network of every session with an
    embedding_cache (None: loaded once, at the first sequence).
    """
    shared = {} if embedder is None else {"embedder": embedder}
    if click_model is not None:
        from engine.click_model import ClickModel

        shared["click_model"] = ClickModel.load(click_model)

    def make(project_dir: Path, video_path: Path):
        from engine.session import Session

        if embedding_cache is None:
            session = Session.create(project_dir, video_path, refiner=refiner, config=config)
        else:
            from engine.embedding import Embedder

            if "embedder" not in shared:
                shared["embedder"] = Embedder.load(device="auto")
            embedder = shared["embedder"]
            folder = Path(embedding_cache) / f"{Path(video_path).name}-{embedder.weights_id}"
            session = Session.create(project_dir, video_path, embedder=embedder, refiner=refiner, config=config,
                                     embedding_dir=folder)
        if "click_model" in shared:
            session.set_click_model(shared["click_model"])
        return session

    return make


def kfold_models(names: Sequence[str], click_folds: str | Path,
                 boundary_folds: str | Path) -> dict[str, tuple[Path, Path]]:
    """{sequence: (click model, boundary head) that never saw it}: the fold weights of `vos-engine train
    --click-model --folds K --out CLICK_FOLDS` (click_model_fold<i>.pt, folds of
    engine.click_model_train.kfold_folds) and of `train --boundary --folds K --out BOUNDARY_FOLDS`
    (kfold/fold<k>.pt, folds of engine.boundary_train.fold_sequences), over the `names` both were trained on."""
    from engine.boundary_train import fold_sequences
    from engine.click_model_train import kfold_folds

    click_folds, head_folds = Path(click_folds), Path(boundary_folds) / "kfold"
    n_click = len(list(click_folds.glob("click_model_fold*.pt")))
    n_head = len(list(head_folds.glob("fold*.pt")))
    if not n_click:
        raise FormatError(click_folds,
                          "no click_model_fold<i>.pt in it (vos-engine train --click-model --folds K --out DIR)")
    if not n_head:
        raise FormatError(head_folds, "no fold<k>.pt in it (vos-engine train --boundary --folds K --out DIR)")
    click = {n: click_folds / f"click_model_fold{i}.pt"
             for i, held in enumerate(kfold_folds(names, n_click)) for n in held}
    head = {n: head_folds / f"fold{k + 1}.pt" for k, held in enumerate(fold_sequences(names, n_head)) for n in held}
    for path in {*click.values(), *head.values()}:
        if not path.is_file():
            raise FormatError(path, "missing: the fold files are numbered from the training's folds")
    return {n: (click[n], head[n]) for n in sorted(names)}


def kfold_session_factory(davis_root: str | Path, click_folds: str | Path, boundary_folds: str | Path,
                          embedding_cache: str | Path | None = None, config=None) -> Callable[[Path, Path], object]:
    """make_session_fn of the k-fold interactive loop: a sequence of the training split is clicked by the click
    model and refined by the boundary head that were trained without it (`kfold_models`), so a run over all of
    them scores the recipes on video they never saw. Every fold's weights are loaded here, before any sequence."""
    from dataclasses import replace

    from engine.boundary import load_head
    from engine.propagation import PropagationConfig

    models = kfold_models(list_sequences(davis_root, "train"), click_folds, boundary_folds)
    config = config or PropagationConfig()
    for head in {h for _, h in models.values()}:
        load_head(head)
    embedder = None
    if embedding_cache is not None:  # one network for all the folds' sessions
        from engine.embedding import Embedder

        embedder = Embedder.load(device="auto")
    makers = {pair: default_session_factory(embedding_cache=embedding_cache, click_model=pair[0], embedder=embedder,
                                            config=replace(config, boundary_head=str(pair[1])))
              for pair in set(models.values())}

    def make(project_dir: Path, video_path: Path):
        name = Path(video_path).name
        if name not in models:
            raise FormatError(video_path, "not one of the training sequences that the k-fold weights were made from")
        return makers[models[name]](project_dir, video_path)

    return make


def run_semi_supervised(
    davis_root: str | Path,
    split: str | None = "train",
    sequences: Sequence[str] | None = None,
    make_session_fn: Callable[[Path, Path], object] | None = None,
    save_predictions: str | Path | None = None,
    refiner: str | None = None,
    embedding_cache: str | Path | None = None,
    config=None,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Run the engine from each sequence's first-frame ground truth and score it (semi-supervised protocol).

    make_session_fn(project_dir, video_path) -> Session; default: Session.create in a temporary project.
    save_predictions: folder to write DIR/<seq>/<frame>.png (indexed, every frame, ground-truth ids).
    seconds_per_frame = engine time (embedding + first mask + propagation) / frames; `timing` splits it.
    embedding_cache, config: see default_session_factory (ignored with make_session_fn);
    progress(done, total) after each sequence.
    """
    make = make_session_fn or default_session_factory(refiner, embedding_cache, config)
    seqs = load_sequences(davis_root, split, sequences)
    objects: list[ObjectScores] = []
    least_sure: dict[str, dict] = {}
    totals = {"frames": 0, "embed_seconds": 0.0, "propagate_seconds": 0.0}
    for si, seq, session in embedded_sessions(seqs, make, "vos-eval", totals):
        gt0 = seq.ground_truth(0)
        t1 = time.perf_counter()
        to_gt = {obj: k for k, obj in session.add_objects_from_ids(0, gt0).items()}
        for _ in session.propagate(0, direction="forward"):
            pass
        totals["propagate_seconds"] += time.perf_counter() - t1
        if save_predictions is not None:
            from engine.palette import write_id_png

            preds = MaskReader(session, to_gt, gt0.shape)
            for t, name in enumerate(seq.frame_names):
                write_id_png(Path(save_predictions) / seq.name / f"{name}.png", preds(t))
        scores = score_session(seq, session, to_gt)
        objects += scores
        ranked = [seq.frame_names[t] for t in session.frames_most_likely_wrong(len(seq))]
        least_sure[seq.name] = least_sure_check(scores, ranked)
        totals["frames"] += len(seq)
        if progress is not None:
            progress(si + 1, len(seqs))
    n = max(totals["frames"], 1)
    timing = dict(totals)
    timing["embed_seconds_per_frame"] = totals["embed_seconds"] / n
    timing["propagate_seconds_per_frame"] = totals["propagate_seconds"] / n
    spf = (totals["embed_seconds"] + totals["propagate_seconds"]) / n
    return EvaluationResult(objects, split=split, seconds_per_frame=spf, timing=timing, least_sure=least_sure)


def score_session(seq: DavisSequence, session, to_gt: dict[int, int]) -> list[ObjectScores]:
    """Per-object J/F of a session's masks of `seq` (semi-supervised protocol); to_gt: {object id: ground-truth id}."""
    gt0 = seq.ground_truth(0)
    preds = MaskReader(session, to_gt, gt0.shape)
    return score_frames(seq.name, seq.frame_names, seq.ground_truth, preds, object_ids_of(gt0))


def compare_table(results: dict[str, dict], worst: int = 5) -> str:
    """Markdown table of `evaluate --json` results ({variant: JSON dict}), one row per variant:
    J&F, J, F over objects, and the ``worst`` lowest-J&F sequences of that variant with their J&F.
    A later variant also shows its change against the first one (the baseline)."""
    rows = ["| variant | J&F | J | F | worst sequences (J&F) |", "|---|---|---|---|---|"]
    base = None
    for name, r in results.items():
        seqs = sorted(r["sequences"].items(), key=lambda kv: kv[1]["JF"])[:worst]
        low = ", ".join(f"{s} {v['JF']:.3f}" for s, v in seqs)
        delta = "" if base is None else f" ({r['JF_mean'] - base:+.3f})"
        rows.append(f"| {name} | {r['JF_mean']:.3f}{delta} | {r['J_mean']:.3f} | {r['F_mean']:.3f} | {low} |")
        base = r["JF_mean"] if base is None else base
    return "\n".join(rows)


def least_sure_check(scores: list[ObjectScores], ranked: Sequence[str], n: int = LEAST_SURE_PICKS) -> dict:
    """How well the engine's "frames most likely wrong" ranking (``ranked``: frame names, least sure
    first) finds one sequence's bad frames: the mean J&F (over objects) of its first ``n`` scored picks,
    against all scored frames and the ``n`` truly worst ones."""
    jf = np.mean([(o.J + o.F) / 2 for o in scores], axis=0)
    index = {name: i for i, name in enumerate(scores[0].frames)}
    picks = [index[name] for name in ranked if name in index][:n]
    return {"picked_JF": _mean(jf[picks]), "worst_JF": _mean(np.sort(jf)[:n]), "JF": _mean(jf),
            "picked": [scores[0].frames[i] for i in picks]}


def run_interactive(
    davis_root: str | Path,
    split: str | None = "train",
    sequences: Sequence[str] | None = None,
    rounds: int = 3,
    make_session_fn: Callable[[Path, Path], object] | None = None,
    refiner: str | None = None,
    embedding_cache: str | Path | None = None,
    config=None,
    progress: Progress | None = None,
) -> dict:
    """Simulated-user evaluation (engine.simulated_user); returns the JSON dict of `interactive-eval`.

    Round 0: one positive click per object at its first-frame interior-most point, then propagation.
    Rounds 1..R: one click per sequence on its worst frame (lowest J&F), in the largest error region, then
    re-propagation from that frame both ways. Every frame is scored (no frame is given as ground truth).
    `rounds[i].seconds` is the engine's mean time per sequence for that round (clicks + propagation;
    the one-off embedding pass is reported apart as `embed_seconds`).
    progress(done, total) after each sequence (all its rounds).
    """
    make = make_session_fn or default_session_factory(refiner, embedding_cache, config)
    seqs = load_sequences(davis_root, split, sequences)
    per_round: list[list[ObjectScores]] = [[] for _ in range(rounds + 1)]
    seconds = np.zeros((rounds + 1, len(seqs)))
    per_seq: dict[str, list[dict]] = {}
    timing = {"embed_seconds": 0.0}
    for si, seq, session in embedded_sessions(seqs, make, "vos-ieval", timing):
        per_seq[seq.name] = []
        for r, (scores, secs, clicks, changes) in enumerate(_interactive_rounds(session, seq, rounds)):
            seconds[r, si] = secs
            per_round[r] += scores
            per_seq[seq.name].append({
                "round": r, **jf_summary(scores), "seconds": float(secs),
                "clicks": [{"frame": c.frame, "object_id": c.object_id, "x": c.x, "y": c.y, "positive": c.positive} for c in clicks],
                "corrected_frames": changes,
            })
        if progress is not None:
            progress(si + 1, len(seqs))
    out_rounds = [{"round": r, **jf_summary(per_round[r]),
                   "seconds": float(seconds[r].mean()) if len(seqs) else 0.0, "seconds_total": float(seconds[r].sum())}
                  for r in range(rounds + 1)]
    return json_safe({
        "split": split, "n_sequences": len(seqs), "rounds": out_rounds, "embed_seconds": timing["embed_seconds"],
        "sequences": per_seq, **regressions(per_seq),
    })


HARMFUL_DROP = 0.01  # issue 13: no correction round may lower its sequence's J&F by more than this
FRAME_DROP = 0.005  # nor its own corrected frame's (issue 13 asks for none; below this is rounding)


def regressions(per_seq: dict[str, list[dict]]) -> dict:
    """The two ways a correction round can make things worse, over `sequences` of an interactive run (each
    round's "JF_mean" and "corrected_frames" [{"frame", "JF_change"}]): rounds that lower their sequence's J&F
    by more than HARMFUL_DROP, and corrected frames whose own J&F fell by more than FRAME_DROP. Counted against
    `correction_rounds`, every round that follows another."""
    harmful, worse, n = [], [], 0
    for name, rounds in per_seq.items():
        for before, after in zip(rounds, rounds[1:]):
            n += 1
            change = after["JF_mean"] - before["JF_mean"]
            if change < -HARMFUL_DROP:
                harmful.append({"sequence": name, "round": after["round"], "JF_change": round(change, 4)})
            worse += [{"sequence": name, "round": after["round"], **f}
                      for f in after["corrected_frames"] if f["JF_change"] < -FRAME_DROP]
    return {"correction_rounds": n, "harmful_rounds": harmful, "corrected_frames_worse": worse}


def corrected_frame_changes(frames, before: np.ndarray | None, after: np.ndarray) -> list[dict]:
    """[{"frame", "JF_change"}] of the frames a round corrected, from per-frame J&F before and after it (none
    before the first round)."""
    if before is None:
        return []
    return [{"frame": int(t), "JF_change": round(float(after[t] - before[t]), 4)} for t in sorted(set(frames))]


def embedded_sessions(seqs, make, prefix: str, timing: dict):
    """(index, sequence, session) for each sequence: a session on a temporary project, its frames embedded (that
    time added to timing["embed_seconds"]), closed once the caller moves on to the next sequence."""
    for si, seq in enumerate(seqs):
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-{seq.name}-") as tmp:
            session = make(Path(tmp) / "project", seq.image_dir)
            try:
                t0 = time.perf_counter()
                _embed_all(session)
                timing["embed_seconds"] += time.perf_counter() - t0
                yield si, seq, session
            finally:
                _close(session)


def jf_summary(scores: list[ObjectScores]) -> dict[str, float]:
    """{"JF_mean", "J_mean", "F_mean"} of some objects' scores: what a round or a sequence reports."""
    s = EvaluationResult(scores).summary()
    return {"JF_mean": s["JF_mean"], "J_mean": s["J_mean"], "F_mean": s["F_mean"]}


def add_ground_truth_objects(session, object_ids) -> tuple[dict[int, int], dict[int, int]]:
    """One empty session object per ground-truth id: ({gt id: object id}, {object id: gt id})."""
    to_session, to_gt = {}, {}
    for k in object_ids:
        obj = session.add_object(name=f"object {k}")
        to_session[k], to_gt[obj.id] = obj.id, k
    return to_session, to_gt


def _interactive_rounds(session, seq: DavisSequence, rounds: int):
    """Per round of one sequence: (scores of every frame, engine seconds, the clicks made, what they did to their
    frames: `corrected_frame_changes`)."""
    from engine import simulated_user as su

    gts = [seq.ground_truth(t) for t in range(len(seq))]
    object_ids = object_ids_of(gts[0])
    work_shape = session.mask(0).shape
    to_session, to_gt = add_ground_truth_objects(session, object_ids)
    preds = jf = None
    for r in range(rounds + 1):
        if r == 0:
            clicks = [c for c in (su.first_click(gts[0], k) for k in object_ids) if c is not None]
        else:
            c = su.next_click(preds, gts, object_ids, jf)
            clicks = [] if c is None else [c]
        t0 = time.perf_counter()
        for c in clicks:
            x, y = scale_point(c.x, c.y, gts[0].shape, work_shape)
            session.click(c.frame, to_session[c.object_id], x, y, positive=c.positive)
        if clicks:
            for _ in session.propagate(clicks[-1].frame, direction="forward" if r == 0 else "both"):
                pass
        secs = time.perf_counter() - t0
        reader = MaskReader(session, to_gt, gts[0].shape)
        preds = [reader(t) for t in range(len(seq))]
        scores = score_frames(seq.name, seq.frame_names, gts.__getitem__, preds.__getitem__, object_ids,
                              skip_first_last=False)
        before, jf = jf, jf_per_frame(scores, len(seq))
        yield scores, secs, clicks, corrected_frame_changes([c.frame for c in clicks], before, jf)


def jf_per_frame(scores: list[ObjectScores], n: int) -> np.ndarray:
    """(n,) J&F of each frame, the mean over the objects (1 where there are none)."""
    return np.mean([(o.J + o.F) / 2 for o in scores], axis=0) if scores else np.ones(n)


class MaskReader:
    """pred_fn(t) over a session: its working-size id mask mapped to ground-truth ids and size."""

    def __init__(self, session, to_gt: dict[int, int], gt_shape: tuple[int, int]):
        self.session, self.gt_shape = session, tuple(gt_shape)
        self.lut = np.zeros(256, dtype=np.uint8)
        for sid, k in to_gt.items():
            self.lut[sid] = k

    def __call__(self, t: int) -> np.ndarray:
        ids = self.lut[np.asarray(self.session.mask(t), dtype=np.uint8)]
        return resize_ids(ids, (self.gt_shape[1], self.gt_shape[0]), smooth=False)


def _embed_all(session) -> None:
    embed = getattr(session, "embed", None)
    if embed is not None:
        for _ in embed():
            pass


def _close(session) -> None:
    close = getattr(session, "close", None)
    if close is not None:
        close()


def scale_point(x: int, y: int, src_shape, dst_shape) -> tuple[int, int]:
    """Pixel (x, y) in an image of shape src (H, W) -> the same spot in an image of shape dst (H', W')."""
    if tuple(src_shape) == tuple(dst_shape):
        return int(x), int(y)
    sx, sy = dst_shape[1] / src_shape[1], dst_shape[0] / src_shape[0]
    xs = min(max(int(math.floor((x + 0.5) * sx)), 0), dst_shape[1] - 1)
    ys = min(max(int(math.floor((y + 0.5) * sy)), 0), dst_shape[0] - 1)
    return xs, ys


def _mean(vals) -> float:
    v = np.asarray(vals, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def json_safe(obj):
    """NaN/inf -> None, numpy scalars -> Python numbers, recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
