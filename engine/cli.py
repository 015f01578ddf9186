"""`vos-engine`: the headless command line, built on the same public API as the GUI.

Each subcommand imports what it needs lazily so `vos-engine --help` stays quick (no torch, no faiss).
Errors the engine raises for bad input print as one line naming the file, exit code 2.
Long work shows its progress on stderr (a bar on a terminal, a line every few seconds in a log; engine.progress);
--quiet silences it, stdout keeps only the results.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from engine.errors import EngineError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _configure_output(_output_options().parse_known_args(argv)[0])  # before any subcommand imports cv2
    args = _parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except EngineError as exc:
        print(f"vos-engine: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment, not our input: still one line naming the file
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"vos-engine: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vos-engine: interrupted", file=sys.stderr)
        return 130


def _output_options() -> argparse.ArgumentParser:
    """--quiet and --verbose, accepted before or after the command."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    p.add_argument("--verbose", action="store_true", help="let OpenCV and FFmpeg print their own messages")
    return p


def _configure_output(options: argparse.Namespace) -> None:
    from engine import progress

    progress.configure(quiet=options.quiet)
    if options.verbose:  # OpenCV reads these when cv2 is first imported
        os.environ["OPENCV_LOG_LEVEL"] = "INFO"
        os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "32"  # AV_LOG_INFO


def _version() -> str:
    from importlib.metadata import version

    return f"vos-engine {version('vos-annotator')}"


def _parser() -> argparse.ArgumentParser:
    from engine.formats import EXPORT_FORMATS, FORMATS  # the one format table (no torch: --help stays quick)

    p = argparse.ArgumentParser(prog="vos-engine", description=__doc__.splitlines()[0],
                                parents=[_output_options()])
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(required=True, metavar="COMMAND", parser_class=_SubParser)

    c = sub.add_parser("convert", help="convert masks between DAVIS, COCO, YouTube-VIS and binary PNGs")
    c.add_argument("src", type=Path, help="DAVIS root or Annotations folder, COCO or YouTube-VIS json")
    c.add_argument("dst", type=Path, help="output folder (davis) or json file (coco, youtube-vis)")
    c.add_argument("--to", required=True, choices=FORMATS)
    c.set_defaults(run=_convert)

    e = sub.add_parser("evaluate", help="score predictions, or run the engine semi-supervised and score it")
    e.add_argument("davis_root", type=Path)
    e.add_argument("--split", default="train")
    e.add_argument("--sequences", help="comma-separated subset of the split")
    e.add_argument("--predictions", type=Path, help="score these predictions (PRED/<seq>/00000.png) instead")
    e.add_argument("--save-predictions", type=Path, help="write the engine's masks as PRED/<seq>/00000.png")
    e.add_argument("--refiner", default=None, type=_refiner, help="refiner: none, modulation or parts")
    e.add_argument("--json", type=Path, help="write the scores as JSON")
    _experiment_options(e)
    e.set_defaults(run=_evaluate)

    cp = sub.add_parser("compare", help="markdown table of evaluate --json results (the first is the baseline)")
    cp.add_argument("results", nargs="+", metavar="NAME=FILE", help="variant name and its evaluate --json file")
    cp.set_defaults(run=_compare)

    i = sub.add_parser("interactive-eval", help="simulated-user clicks, J&F after each round")
    i.add_argument("davis_root", type=Path)
    i.add_argument("--split", default="train")
    i.add_argument("--sequences", help="comma-separated subset of the split")
    i.add_argument("--rounds", type=int, help="correction rounds (default 3; with --user robot: 8)")
    i.add_argument("--user", choices=("clicks", "robot"), default="clicks",
                   help="clicks: the simulated clicker; robot: the official DAVIS scribble robot (davisinteractive)")
    i.add_argument("--json", type=Path)
    _experiment_options(i)
    _click_model_option(i)
    i.add_argument("--kfold", nargs=2, type=Path, metavar=("CLICK_FOLDS", "BOUNDARY_FOLDS"),
                   help="score each training sequence with the click model and boundary head trained without it: "
                        "the --out folders of `train --click-model --folds K` and `train --boundary --folds K`")
    i.set_defaults(run=_interactive_eval)

    ce = sub.add_parser("click-eval", help="single-frame clicks as RITM reports them: NoC@85/90, mIoU@k")
    ce.add_argument("davis_root", type=Path)
    ce.add_argument("--split", default="train")
    ce.add_argument("--sequences", help="comma-separated subset of the split")
    ce.add_argument("--frames-per-sequence", type=_positive, default=3, help="frames sampled evenly (default 3)")
    ce.add_argument("--max-clicks", type=_positive, default=20)
    ce.add_argument("--json", type=Path)
    _experiment_options(ce)
    _click_model_option(ce)
    ce.set_defaults(run=_click_eval)

    pr = sub.add_parser("propagate", help="propagate a mask through a video and export it")
    pr.add_argument("video", type=Path, help="video file or folder of frames")
    pr.add_argument("--mask", required=True, type=Path, help="indexed or 0/255 PNG of the annotated frame")
    pr.add_argument("--frame", type=int, default=0, help="index of the annotated frame")
    pr.add_argument("--out", required=True, type=Path)
    pr.add_argument("--format", default="davis", choices=list(EXPORT_FORMATS))
    pr.add_argument("--refiner", default=None, type=_refiner)
    pr.add_argument("--project", type=Path, help="project folder to keep (default: a temporary one)")
    pr.set_defaults(run=_propagate)

    ba = sub.add_parser("batch", help="propagate a whole dataset on Ray, one task per video (resumable)")
    ba.add_argument("source", type=Path, help="DAVIS root, or a .csv/.jsonl manifest of video, mask, frame, objects")
    ba.add_argument("--out", required=True, type=Path, help="projects/, one folder per format, summary.json")
    ba.add_argument("--format", nargs="+", default=["davis"], choices=FORMATS, dest="formats")
    ba.add_argument("--sequences", help="comma-separated subset of a DAVIS root's sequences")
    ba.add_argument("--refiner", default=None, type=_refiner)
    ba.add_argument("--address", help="join this Ray cluster (auto, HOST:PORT); paths must be on shared storage")
    ba.add_argument("--workers", type=_positive, help="videos at once (default: one per core); each gets cores/N threads")
    ba.add_argument("--force", action="store_true", help="redo the videos already done")
    ba.add_argument("--evaluate", action="store_true", help="score J/F against a DAVIS root's ground truth")
    ba.set_defaults(run=_batch)

    b = sub.add_parser("bench", help="speed and memory figures at 854x480, as JSON")
    b.add_argument("video", nargs="?", type=Path, help="video or frame folder (default: synthetic frames)")
    b.add_argument("--refiner", default=None, type=_refiner)
    b.add_argument("--long", action="store_true", help="also measure peak RSS on a 3000-frame video")
    b.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="cpu: embedding and retrieval on the CPU; cuda: both on the GPU; auto (default): "
                        "each on the GPU when it sees one, as the app does")
    b.add_argument("--json", type=Path)
    b.set_defaults(run=_bench)

    t = sub.add_parser("train", help="reproduce the shipped weights from DAVIS frames")
    t.add_argument("davis_root", type=Path, nargs="?", help="default: ../shared/data/davis2016-train")
    t.add_argument("--refiner", default=None, help="train this refiner instead of the embedding head")
    t.add_argument("--boundary", action="store_true", help="train the boundary head instead of the embedding head")
    t.add_argument("--click-model", action="store_true", help="train the click model instead of the embedding head")
    t.add_argument("--folds", type=_positive, metavar="K",
                   help="with --boundary or --click-model: the K-fold validation report (JSON; --boundary writes it "
                        "and each fold's head beside the weights, --click-model each fold's weights only with --out)")
    t.add_argument("--embedding-cache", type=Path, metavar="DIR",
                   help="with --boundary or --click-model: read each sequence's embeddings from DIR (--boundary "
                        "also keeps new ones there)")
    t.add_argument("--out", type=Path,
                   help="output folder (default: where the engine reads them, resources/... in a checkout)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(run=_train)

    d = sub.add_parser("demo", help="run the whole pipeline on the sample project")
    d.add_argument("--out", type=Path, default=Path("vos-demo"))
    d.set_defaults(run=_demo)

    g = sub.add_parser("gpu-check", help="on a CUDA machine: GPU tests, GPU vs CPU results, bench (skips without)")
    g.set_defaults(run=_gpu_check)
    return p


class _SubParser(argparse.ArgumentParser):
    """A subcommand's parser: also takes --quiet / --verbose (main() has read them already)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, parents=[_output_options()], **kwargs)


def _experiment_options(p: argparse.ArgumentParser) -> None:
    """Options of the evaluation commands for people who evaluate repeatedly (variants, reused embeddings)."""
    p.add_argument("--embedding-cache", type=Path, metavar="DIR",
                   help="keep each sequence's embeddings in DIR and reuse them on later runs")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="propagation setting for this run (a PropagationConfig field), repeatable")


def _click_model_option(p: argparse.ArgumentParser) -> None:
    """--click-model of the commands that click: the k-fold models of `train --click-model --folds K --out DIR`
    score the sequences they never saw."""
    p.add_argument("--click-model", type=Path, metavar="FILE",
                   help="the weights of another click model (default: the shipped one)")


def _config(settings: list[str]):
    """["name=value", ...] -> PropagationConfig with those fields changed (typed as their defaults)."""
    import dataclasses

    from engine.propagation import PropagationConfig

    defaults = PropagationConfig()
    fields = {f.name for f in dataclasses.fields(PropagationConfig)}
    changes = {}
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise EngineError(None, f"--set {item!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(fields))}")
        kind = type(getattr(defaults, name))
        try:
            changes[name] = kind(value)
        except ValueError:
            raise EngineError(None, f"--set {item!r}: {value!r} cannot be read as {kind.__name__}") from None
    return dataclasses.replace(defaults, **changes)


def _refiner(name: str) -> str | None:
    """argparse type: a registered refiner name, or none."""
    from engine.refiners import available_refiners

    if name.lower() in ("", "none", "off"):
        return None
    if name not in available_refiners():
        raise argparse.ArgumentTypeError(f"unknown refiner {name!r}; choose none, {', '.join(available_refiners())}")
    return name


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return int(text)


def _print_json(result: dict, path: Path | None) -> None:
    if path is not None:
        from engine.atomic import atomic_write_json

        atomic_write_json(path, result)
        print(f"wrote {path}")


def _split_sequences(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _convert(args) -> None:
    from engine.formats import convert
    from engine.progress import Progress

    with Progress("converting") as bar:
        written = convert(args.src, args.dst, to=args.to, progress=bar.callback)
    for path in written:
        print(f"wrote {path}")


def _evaluate(args) -> None:
    from engine import evaluation
    from engine.progress import Progress

    sequences = _split_sequences(args.sequences)
    with Progress("scoring" if args.predictions is not None else "evaluating", unit="sequence") as bar:
        if args.predictions is not None:
            result = evaluation.score_predictions(args.davis_root, args.predictions, args.split, sequences,
                                                  progress=bar.callback)
        else:
            result = evaluation.run_semi_supervised(
                args.davis_root, args.split, sequences, save_predictions=args.save_predictions,
                refiner=args.refiner, progress=bar.callback,
                embedding_cache=args.embedding_cache, config=_config(args.settings),
            )
    print(result.table())
    _print_json(result.to_json(), args.json)


def _compare(args) -> None:
    from engine.errors import FormatError
    from engine.evaluation import compare_table

    results = {}
    for item in args.results:
        name, sep, file = item.rpartition("=")
        path = Path(file)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise FormatError(path, f"cannot read ({e})") from None
        if not isinstance(data, dict) or not {"JF_mean", "J_mean", "F_mean", "sequences"} <= set(data):
            raise FormatError(path, "not an evaluate --json result (no JF_mean, J_mean, F_mean, sequences)")
        results[name if sep else path.stem] = data
    print(compare_table(results))


def _interactive_eval(args) -> None:
    from engine import evaluation
    from engine.progress import Progress

    sequences = _split_sequences(args.sequences)
    config = _config(args.settings)
    if args.kfold is None:
        make = evaluation.default_session_factory(embedding_cache=args.embedding_cache, config=config,
                                                  click_model=args.click_model)
    elif args.click_model is not None or any(s.startswith("boundary_head=") for s in args.settings):
        raise EngineError(None, "--kfold chooses the click model and the boundary head: drop --click-model and "
                                "--set boundary_head")
    else:
        make = evaluation.kfold_session_factory(args.davis_root, *args.kfold, embedding_cache=args.embedding_cache,
                                                config=config)
    with Progress("interactive evaluation", unit="sequence") as bar:
        if args.user == "robot":
            from engine.davis_robot import run_robot

            result = run_robot(args.davis_root, args.split, sequences, rounds=args.rounds or 8,
                               make_session_fn=make, progress=bar.callback)
        else:
            result = evaluation.run_interactive(
                args.davis_root, args.split, sequences, rounds=3 if args.rounds is None else args.rounds,
                make_session_fn=make, progress=bar.callback,
            )
    for r in result["rounds"]:
        print(f"round {r['round']}: J&F {r['JF_mean']:.3f}  J {r['J_mean']:.3f}  F {r['F_mean']:.3f}  {r['seconds']:.2f} s")
    print(regressions_text(result))
    _print_json(result, args.json)


def regressions_text(result: dict) -> str:
    """Two lines of an interactive run's `engine.evaluation.regressions`: issue 13 asks for none."""
    from engine.evaluation import FRAME_DROP, HARMFUL_DROP

    def listed(items) -> str:
        where = [f" frame {i['frame']}" if "frame" in i else "" for i in items]
        return " (" + ", ".join(f"{i['sequence']} round {i['round']}{w} {i['JF_change']:+.3f}"
                                for i, w in zip(items, where)) + ")" if items else ""

    harmful, worse = result["harmful_rounds"], result["corrected_frames_worse"]
    return (f"rounds lowering their sequence by more than {HARMFUL_DROP}: {len(harmful)} of "
            f"{result['correction_rounds']}{listed(harmful)}\n"
            f"corrections that lowered their own frame by more than {FRAME_DROP}: {len(worse)}{listed(worse)}")


def _click_eval(args) -> None:
    from engine.click_eval import run_click_eval, table
    from engine.evaluation import default_session_factory
    from engine.progress import Progress

    with Progress("click evaluation", unit="sequence") as bar:
        result = run_click_eval(args.davis_root, args.split, _split_sequences(args.sequences),
                                frames_per_sequence=args.frames_per_sequence, max_clicks=args.max_clicks,
                                make_session_fn=default_session_factory(embedding_cache=args.embedding_cache,
                                                                        config=_config(args.settings),
                                                                        click_model=args.click_model),
                                progress=bar.callback)
    print(table(result))
    _print_json(result, args.json)


def _propagate(args) -> None:
    from engine.pipeline import propagate_file
    from engine.progress import Stages

    with Stages() as stages:
        written = propagate_file(
            args.video, args.mask, frame=args.frame, out=args.out, fmt=args.format,
            refiner=args.refiner, project_dir=args.project, progress=stages.callback,
        )
    print(f"wrote {len(written)} file(s) to {args.out}")


def _batch(args) -> int:
    from engine.batch import read_source, run_batch

    videos = read_source(args.source, _split_sequences(args.sequences), evaluate=args.evaluate)
    summary = run_batch(videos, args.out, formats=args.formats, refiner=args.refiner, address=args.address,
                        workers=args.workers, force=args.force, evaluate=args.evaluate, source=args.source)
    for name in summary["failed"]:
        print(f"vos-engine: failed: {name}: {summary['videos'][name]['reason']}", file=sys.stderr)
    print(f"{len(summary['done'])} done, {len(summary['skipped'])} skipped (done before), "
          f"{len(summary['failed'])} failed; {summary['frames']} frames at {summary['fps']} frames/s; "
          f"wrote {args.out / 'summary.json'}")
    return 2 if summary["failed"] else 0


def _bench(args) -> None:
    from engine.bench import run_bench

    if args.device == "cuda":
        _require_cuda()
    result = run_bench(args.video, refiner=args.refiner, long_video=args.long, device=args.device)
    print(json.dumps(result, indent=2))
    _print_json(result, args.json)


def _require_cuda() -> None:
    import torch

    from engine.retrieval import gpu_available

    if not torch.cuda.is_available():
        raise EngineError(None, f"--device cuda: torch {torch.__version__} sees no CUDA device")
    if not gpu_available():
        raise EngineError(None, "--device cuda: faiss has no GPU support (pip install faiss-gpu; see README)")


def _train(args) -> None:
    from engine.progress import Stages

    root = args.davis_root or Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016-train"
    folds = args.folds or 0
    units = {"training": "iteration", "loading sequences": "sequence", "engine output": "sequence",
             **{f"training fold {k + 1} of {folds}": "iteration" for k in range(folds)}}
    with Stages(units=units) as stages:
        if args.boundary:
            from engine.boundary_train import train_boundary

            train_boundary(root, out_dir=args.out, seed=args.seed, folds=folds,
                           embedding_cache=args.embedding_cache, progress=stages.callback)
        elif args.click_model:
            from engine import click_model_train as cmt

            if args.folds:
                result = cmt.run_kfold(root, args.folds, seed=args.seed, embedding_cache=args.embedding_cache,
                                       out_dir=args.out or cmt.RESOURCES, fold_weights_dir=args.out,
                                       progress=stages.callback)
                stages.close()
                print(cmt.kfold_table(result))
            else:
                cmt.train_shipped(root, seed=args.seed, embedding_cache=args.embedding_cache, out_dir=args.out,
                                  progress=stages.callback)
        elif args.refiner:
            from engine.refiners import train_refiner

            train_refiner(args.refiner, root, out_dir=args.out, seed=args.seed, progress=stages.callback)
        else:
            from engine.embedding.train import train_embedding

            train_embedding(root, out_dir=args.out, seed=args.seed, progress=stages.callback)


def _demo(args) -> None:
    from engine.pipeline import run_demo
    from engine.progress import Stages

    with Stages() as stages:
        for line in run_demo(args.out, progress=stages.callback):
            stages.close()  # the stage's bar ends before its result line
            print(line)


def _gpu_check(args) -> int:
    from engine.gpu_check import run_gpu_check

    return run_gpu_check()


if __name__ == "__main__":
    sys.exit(main())
