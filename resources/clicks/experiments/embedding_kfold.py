"""The click loop with the embedding by k-fold too (resources/clicks/README.md, "With the embedding by k-fold").

    python resources/clicks/experiments/embedding_kfold.py DAVIS_ROOT EMBEDDING_FOLDS BOUNDARY_FOLDS OUT \
        --embedding-cache DIR [--seed S] [--folds-to-run 0,1,...]

The click model's k-fold (`interactive-eval --kfold`) is in-sample for the embedding head on 24 of the 30
sequences. Here each fold k of `engine.boundary_train.fold_sequences` is clicked with everything trained without it:
its sequences are embedded by EMBEDDING_FOLDS/fold<k>/head.pt (resources/embedding/experiments/kfold.py), the
click model is trained as shipped (seed 0 unless --seed) on the other folds' frames embedded by that same head, and the boundary
head is BOUNDARY_FOLDS/kfold/fold<k+1>.pt. Writes OUT/fold<k>.json (`interactive-eval --rounds 3` of the fold's
sequences) and OUT/click_model_fold<k>.pt.
"""

import argparse
from pathlib import Path

from engine.atomic import atomic_write_json
from engine.boundary_train import fold_sequences
from engine.click_model_train import load_frames, train_click_model
from engine.embedding import Embedder
from engine.evaluation import default_session_factory, list_sequences, run_interactive
from engine.propagation import PropagationConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("davis_root", type=Path)
    p.add_argument("embedding_folds", type=Path)
    p.add_argument("boundary_folds", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--embedding-cache", type=Path, required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="the click model's training seed")
    p.add_argument("--folds-to-run", help="comma-separated fold numbers (default: all)")
    args = p.parse_args()
    names = list_sequences(args.davis_root, "train")
    folds = fold_sequences(names, args.folds)
    run = [int(k) for k in args.folds_to_run.split(",")] if args.folds_to_run else range(args.folds)
    for k in run:
        held = folds[k]
        embedder = Embedder.load(weights=args.embedding_folds / f"fold{k}" / "head.pt")
        frames = load_frames(args.davis_root, [s for s in names if s not in held], args.embedding_cache,
                             embedder=embedder)
        model, _ = train_click_model(frames, seed=args.seed)
        model.save(args.out / f"click_model_fold{k}.pt")
        make = default_session_factory(
            embedding_cache=args.embedding_cache, click_model=args.out / f"click_model_fold{k}.pt",
            embedder=embedder,
            config=PropagationConfig(boundary_head=str(args.boundary_folds / "kfold" / f"fold{k + 1}.pt")))
        atomic_write_json(args.out / f"fold{k}.json",
                          run_interactive(args.davis_root, None, held, rounds=3, make_session_fn=make))
        print(f"fold {k}: {', '.join(held)}", flush=True)


if __name__ == "__main__":
    main()
