"""`vos-engine batch`: propagate a whole dataset from given masks, one Ray task per video; resumable, fault tolerant.

SOURCE is a DAVIS root (JPEGImages/480p/<seq>/*.jpg, Annotations/480p/<seq>/*.png; a sequence's first annotation PNG
is its given mask, read as `vos-engine evaluate` reads ground truth) or a manifest: a .csv with a header row or a
.jsonl file of one JSON object per line, with the fields `video` (a video file or frame folder), `mask` (a PNG as
`vos-engine propagate --mask` takes it), `frame` (its frame index, default 0) and `objects` (the objects' names in id
order, optional; separated by ";" in a CSV). Relative paths are relative to the manifest. A video's NAME is its
sequence name, or the video's file or folder name without suffix.

What a video leaves under OUT:
    projects/NAME.vosproj   its project, embedded and propagated: open it in the annotator to correct it
    <format>/NAME/          what `vos-engine propagate VIDEO --out OUT/<format>/NAME --format <format>` writes
    done/NAME.json          the done-marker, written atomically after all the rest: the video's summary record
and OUT/summary.json the whole run: per video its status (done, skipped: done before, failed), frames, seconds, fps,
mean confidence, the 5 least-sure frames (with --evaluate J, F, JF), or the one-line reason it failed.

Failures. A bad SOURCE (unreadable manifest, bad row, missing file, two videos of one name) stops before anything runs
(EngineError: one line, exit 2). What only opening a video shows (an undecodable video, a mask of another size, a
frame outside the video) fails that video alone with its one-line message, without a retry: the same input fails the
same way. Anything else that raises, and a worker process that dies, is retried once, then recorded as failed. A video
without its done-marker is not done, whatever else of it is on disk: a rerun redoes it from scratch. A rerun also redoes
a done video for --force, for a format or the --evaluate scores it lacks, but never one whose project changed since the
batch made it (corrected in the annotator): that video is failed, its project left as it is.

Threads: each task gets `threads` = the Ray instance's CPUs // workers cores, as VOS_ENGINE_THREADS and
OMP_NUM_THREADS of its worker process, so torch and faiss both use that many (engine/threads.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine import progress
from engine.atomic import atomic_write_json
from engine.errors import EngineError, FormatError

MANIFEST_FIELDS = ("video", "mask", "frame", "objects")
LEAST_SURE = 5  # frames per video in the summary's "review first" list
# Videos at once on the local instance: cores // DEFAULT_THREADS. 2 tasks x 1 thread beat 1 task x 2 threads on the
# 2-core machine (README, "Batch on Ray").
DEFAULT_THREADS = 1
OBJECT_STORE_BYTES = 100 * 1024 ** 2  # tasks pass small dicts only; Ray's default takes 30 % of RAM in /dev/shm


@dataclass(frozen=True)
class Video:
    """One video of a batch: where its frames and its given mask are, and its name under OUT."""

    name: str
    video: Path
    mask: Path
    frame: int = 0
    objects: tuple[str, ...] = ()  # names in id order; empty: "object 1", ...
    davis_root: Path | None = None  # from a DAVIS root: the mask is ground truth, the other frames' too


# ----------------------------------------------------------------------------------------------- the source


def read_source(source: str | Path, sequences: list[str] | None = None, evaluate: bool = False) -> list[Video]:
    """The videos of a DAVIS root or a manifest, every path checked (FormatError naming the file otherwise).

    sequences: a subset of a DAVIS root. evaluate: the ground truth of every frame must be there."""
    source = Path(source).absolute()
    if source.is_dir():
        videos = _read_davis(source, sequences)
        if evaluate:
            from engine.evaluation import load_sequences

            load_sequences(source, None, [v.name for v in videos])  # every frame's ground truth is there
        return videos
    if sequences:
        raise FormatError(source, "--sequences applies to a DAVIS root, not to a manifest")
    if evaluate:
        raise FormatError(source, "a manifest has no ground truth: --evaluate needs a DAVIS root")
    return _read_manifest(source)


def _read_davis(root: Path, sequences: list[str] | None) -> list[Video]:
    from engine.evaluation import RESOLUTION

    img_root, ann_root = root / "JPEGImages" / RESOLUTION, root / "Annotations" / RESOLUTION
    for folder in (img_root, ann_root):
        if not folder.is_dir():
            raise FormatError(folder, "folder missing: not a DAVIS root (and a manifest is a .csv or .jsonl file)")
    names = sequences or sorted(d.name for d in ann_root.iterdir() if d.is_dir())
    if not names:
        raise FormatError(ann_root, "no sequence folders")
    videos = []
    for name in names:
        img_dir, ann_dir = img_root / name, ann_root / name
        frames = sorted(p.stem for p in img_dir.glob("*.jpg")) or sorted(p.stem for p in img_dir.glob("*.png"))
        if not frames:
            raise FormatError(img_dir, f"no frames of sequence {name!r}")
        index = {stem: t for t, stem in enumerate(frames)}
        annotated = sorted(p for p in ann_dir.glob("*.png") if p.stem in index)
        if not annotated:
            raise FormatError(ann_dir, f"no annotation PNG named as a frame of {name!r} ({frames[0]}.png, ...)")
        videos.append(Video(name, img_dir, annotated[0], index[annotated[0].stem], davis_root=root))
    return videos


def _read_manifest(path: Path) -> list[Video]:
    if path.suffix.lower() not in (".csv", ".jsonl"):
        raise FormatError(path, "not found, or not a source: give a DAVIS root folder or a .csv or .jsonl manifest")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(path, f"cannot read the manifest ({e})") from None
    videos: dict[str, tuple[int, Video]] = {}
    for line, row in _manifest_rows(path, text):
        video = _manifest_video(path, line, row)
        if video.name in videos:
            raise FormatError(path, f"line {line}: a second video named {video.name!r} (first on line "
                                    f"{videos[video.name][0]}): every video needs its own name")
        videos[video.name] = (line, video)
    if not videos:
        raise FormatError(path, "the manifest lists no video")
    return [v for _, v in videos.values()]


def _manifest_rows(path: Path, text: str):
    """(line number, {field: value}) of each row of a CSV (header first) or JSONL manifest."""
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        unknown = [f for f in header if f not in MANIFEST_FIELDS]
        if unknown or "video" not in header or "mask" not in header:
            raise FormatError(path, f"line 1: the header must name the columns video, mask and optionally frame, "
                                    f"objects (got {', '.join(header) or 'nothing'})")
        for row in reader:
            if None in row:
                raise FormatError(path, f"line {reader.line_num}: more values than columns")
            names = row.get("objects") or ""
            yield reader.line_num, {**row, "objects": [n.strip() for n in names.split(";") if n.strip()]}
        return
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise FormatError(path, f"line {line}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise FormatError(path, f"line {line}: expected a JSON object")
        unknown = sorted(set(row) - set(MANIFEST_FIELDS))
        if unknown:
            raise FormatError(path, f"line {line}: unknown field(s) {', '.join(unknown)}; "
                                    f"expected {', '.join(MANIFEST_FIELDS)}")
        yield line, row


def _manifest_video(path: Path, line: int, row: dict) -> Video:
    def where(problem: str) -> FormatError:
        return FormatError(path, f"line {line}: {problem}")

    files = {}
    for key in ("video", "mask"):
        value = row.get(key)
        if not isinstance(value, str) or not value.strip():
            raise where(f"no {key} path")
        p = Path(value.strip())
        files[key] = p if p.is_absolute() else (path.parent / p).absolute()
        if not files[key].exists():
            raise where(f"{key} {files[key]} not found")
    if not files["mask"].is_file():
        raise where(f"mask {files['mask']} is not a file")
    frame = row.get("frame")
    if frame in (None, ""):
        frame = 0
    elif isinstance(frame, str) and frame.strip().isdigit():
        frame = int(frame)
    if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
        raise where(f"frame must be a frame index (0, 1, ...), not {row.get('frame')!r}")
    names = row.get("objects") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise where("objects must be a list of names")
    name = files["video"].name if files["video"].is_dir() else files["video"].stem
    return Video(name, files["video"], files["mask"], frame, tuple(names))


# ----------------------------------------------------------------------------------------------- one video


def process_video(video: Video, out: str | Path, formats=("davis",), refiner: str | None = None,
                  evaluate: bool = False, embedder=None) -> dict:
    """Make one video's project and exports under `out` (what a Ray task runs); its summary record.

    Clears whatever an earlier, unfinished attempt left, and writes the done-marker last. EngineError for bad input.
    embedder: for tests (Session.create's); None is the shipped network."""
    from engine.palette import read_id_png
    from engine.pipeline import annotate_frame
    from engine.session import Session
    import torch

    out = Path(out)
    start = time.perf_counter()
    project_dir = _clear(out, video.name, formats)
    session = Session.create(project_dir, video.video, refiner=refiner, embedder=embedder)
    try:
        if video.davis_root is not None:
            from engine.evaluation import read_ground_truth as read_mask
        else:
            read_mask = read_id_png
        objects = annotate_frame(session, video.frame, read_mask(video.mask), video.mask)
        if video.objects:
            if len(video.objects) != len(objects):
                raise FormatError(video.mask, f"{len(objects)} object(s) in the mask, but "
                                              f"{len(video.objects)} name(s) given")
            for obj, name in zip((objects[k] for k in sorted(objects)), video.objects):
                session.update_object(obj, name=name)
        for _ in session.embed():
            pass
        for _ in session.propagate(video.frame, direction="both"):
            pass
        session.save()
        for fmt in formats:
            session.export(out / fmt / video.name, fmt)
        record = {"status": "done", "frames": len(session), "project": f"projects/{video.name}.vosproj",
                  "outputs": {fmt: f"{fmt}/{video.name}" for fmt in formats}, "threads": torch.get_num_threads(),
                  "mean_confidence": _mean_confidence(session, video.frame),
                  "least_sure": session.frames_most_likely_wrong(LEAST_SURE)}
        if evaluate:
            record.update(_scores(video, session, objects))
    finally:
        session.close()
    record["seconds"] = round(time.perf_counter() - start, 3)
    record["fps"] = round(record["frames"] / max(record["seconds"], 1e-9), 2)
    record["project_sha256"] = _project_hash(out, video.name)
    atomic_write_json(_marker(out, video.name), record)
    return record


def _clear(out: Path, name: str, formats) -> Path:
    """Remove the done-marker first, then what an earlier attempt made; returns the (absent) project folder."""
    _marker(out, name).unlink(missing_ok=True)
    project_dir = out / "projects" / f"{name}.vosproj"
    for folder in (project_dir, *(out / fmt / name for fmt in formats)):
        shutil.rmtree(folder, ignore_errors=True)
    return project_dir


def _mean_confidence(session, given: int) -> float | None:
    """Mean over the propagated frames of the least sure object's confidence (what ranks frames_most_likely_wrong)."""
    values = [min(c.values()) for t in range(len(session)) if t != given and (c := session.confidence(t))]
    return round(sum(values) / len(values), 4) if values else None


def _scores(video: Video, session, objects: dict[int, int]) -> dict:
    """J, F and JF of the video against its ground truth, as `vos-engine evaluate` scores a sequence."""
    from engine.evaluation import EvaluationResult, load_sequences, score_session

    seq = load_sequences(video.davis_root, None, [video.name])[0]
    summary = EvaluationResult(score_session(seq, session, {obj: k for k, obj in objects.items()})).summary()
    return {"J": summary["J_mean"], "F": summary["F_mean"], "JF": summary["JF_mean"]}


def _marker(out: Path, name: str) -> Path:
    return out / "done" / f"{name}.json"


def _project_hash(out: Path, name: str) -> str | None:
    try:
        return hashlib.sha256((out / "projects" / f"{name}.vosproj" / "project.json").read_bytes()).hexdigest()
    except OSError:
        return None


def _task(video: Video, out: str, formats, refiner, evaluate, embedder) -> dict:
    """The Ray task: bad input is that video's failure at once; other exceptions go to Ray, which retries once."""
    try:
        return process_video(video, out, formats, refiner, evaluate, embedder)
    except EngineError as exc:
        return {"status": "failed", "reason": str(exc)}


# ----------------------------------------------------------------------------------------------- the batch


def run_batch(videos: list[Video], out: str | Path, formats=("davis",), refiner: str | None = None,
              address: str | None = None, workers: int | None = None, force: bool = False,
              evaluate: bool = False, source: str | Path | None = None, embedder=None) -> dict:
    """Run every video not done yet as a Ray task, `workers` at once; writes and returns OUT/summary.json's dict.

    Uses the Ray instance of this process when there is one (ray.init before), else joins `address`, else starts a
    local instance with this machine's cores (and stops it at the end)."""
    out = Path(out).absolute()
    records: dict[str, dict] = {}
    todo = []
    for v in videos:
        done = _done_record(out, v.name)
        if done is not None and not force and set(formats) <= set(done["outputs"]) and (not evaluate or "JF" in done):
            records[v.name] = {**done, "status": "skipped"}
        elif done is not None and _project_hash(out, v.name) not in (None, done.get("project_sha256")):
            records[v.name] = {"status": "failed", "reason": f"{out / done['project']}: changed since the batch made "
                               "it (corrected in the annotator?); move it away to redo this video"}
        else:
            todo.append(v)
    _say(f"{len(videos)} video(s): {len(videos) - len(todo)} done before, {len(todo)} to do")
    started = time.perf_counter()
    workers, threads = _run(todo, records, address, workers, (str(out), tuple(formats), refiner, evaluate, embedder))
    seconds = time.perf_counter() - started
    ordered = {v.name: records[v.name] for v in videos}
    frames = sum(records[v.name].get("frames", 0) for v in todo)
    summary = {
        "source": None if source is None else str(source), "formats": list(formats), "refiner": refiner or "none",
        "workers": workers, "threads_per_worker": threads, "seconds": round(seconds, 2), "frames": frames,
        "fps": round(frames / max(seconds, 1e-9), 2),
        **{status: [n for n, r in ordered.items() if r["status"] == status] for status in ("done", "skipped", "failed")},
        "videos": ordered,
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def _run(todo: list[Video], records: dict, address: str | None, workers: int | None, args: tuple):
    """Run `_task(video, *args)` for each video of `todo`, `workers` at once, into records[name]; (workers, threads)."""
    if not todo:
        return None, None
    try:
        import ray
    except ImportError:
        raise EngineError(None, "vos-engine batch needs Ray: pip install \".[cluster]\"") from None
    own_instance = _connect(ray, address)
    try:
        workers, threads = _split(ray, workers)
        _say(f"{workers} video(s) at once, {threads} thread(s) each")
        task = ray.remote(_task).options(
            num_cpus=threads, max_retries=1, retry_exceptions=True,
            runtime_env={"env_vars": {"VOS_ENGINE_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}})
        queue, running, counts, frames = list(todo), {}, {"done": 0, "failed": 0}, 0
        started = time.perf_counter()
        with progress.Progress("batch", total=len(todo), unit="video") as bar:
            while queue or running:
                while queue and len(running) < workers:
                    v = queue.pop(0)
                    running[task.remote(v, *args)] = v
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    v = running.pop(ref)
                    try:
                        records[v.name] = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        records[v.name] = {"status": "failed", "reason": _one_line(exc)}
                    counts[records[v.name]["status"]] += 1
                    frames += records[v.name].get("frames", 0)
                    bar.set_postfix(f"{counts['done']} done, {counts['failed']} failed, {len(running)} running, "
                                    f"{frames / (time.perf_counter() - started):.1f} frames/s")
                    bar.update()
    finally:
        if own_instance:
            ray.shutdown()
    return workers, threads


def _done_record(out: Path, name: str) -> dict | None:
    """The video's done-marker record, or None when it is not done."""
    try:
        record = json.loads(_marker(out, name).read_text(encoding="utf-8"))
        return record if record["status"] == "done" and isinstance(record["outputs"], dict) else None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _connect(ray, address: str | None) -> bool:
    """Start or join Ray unless this process already did; True when the instance is ours to stop."""
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError) as exc:
            while exc.__cause__ is not None:  # Ray's own reason is at the end of the chain
                exc = exc.__cause__
            raise EngineError(None, f"cannot join the Ray cluster at {address}: {_one_line(exc)}") from None
    else:
        ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=OBJECT_STORE_BYTES, **quiet)
    return True


def _check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers on fails in seconds, not after Ray's minutes of retries."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        return  # "auto": Ray finds the cluster of this machine itself
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise EngineError(None, f"cannot join the Ray cluster at {address}: nothing answers there "
                                f"({e.strerror or e})") from None


def _split(ray, workers: int | None) -> tuple[int, int]:
    """(videos at once, threads each): tasks x threads = the instance's CPUs, threads no more than a node has."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    node_cpus = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [1])
    workers = min(workers or cpus // DEFAULT_THREADS, cpus) or 1
    return workers, max(1, min(cpus // workers, node_cpus))


def _one_line(exc: BaseException) -> str:
    """A Ray failure as one line: the task's own exception when it raised, else what happened to the worker."""
    cause = getattr(exc, "cause", None)
    exc = cause if isinstance(cause, BaseException) else exc
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300]


def _say(line: str) -> None:
    if not progress.quiet():
        print(line, file=sys.stderr, flush=True)
