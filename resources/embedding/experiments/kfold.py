"""The embedding head by k-fold over all the DAVIS training sequences (resources/embedding/README.md, "k-fold").

    python resources/embedding/experiments/kfold.py DAVIS_ROOT OUT --embedding-cache DIR [--folds 5] [--iters N]
        [--backbone lite0|lite1|lite2] [--tune-from BLOCK [--late-lr F]] [--seed S] [--distractors P]

The shipped head was trained on 24 of the 30 sequences, so every other k-fold figure of the engine (boundary head,
click model) is in-sample for the embedding on those 24. Here each fold's sequences are embedded by a head trained
as `training.json` (beside the shipped head) records, with the same seed unless --seed, on the other folds only, and scored by
`evaluate` from their first-frame masks. The boundary head is off in both rows (it was trained on the shipped
head's output); the other row is the shipped head on the same sequences. Writes OUT/features (frozen backbone
maps, ~1.5 GB), OUT/fold<k>/head.pt, the embeddings in DIR (as `evaluate --embedding-cache` keeps them) and
OUT/kfold.json, and prints the table. `--iters 0` gives each fold the untrained head (the PCA of its training
folds' features), which is where the recipe's training starts. `--backbone` trains the same recipe on another
EfficientNet-Lite's maps (OUT then needs its own features). `--tune-from` fine-tunes the backbone's blocks from that
one on (the stride-16/32 stages, `train.LateStages`) with the head, at `--late-lr` times the head's learning rate;
the head file keeps them (its `backbone_state`). `--distractors P` adds, to a training pair's references with
probability P, cells of another sequence's frame as background (`train_head(distractors=)`).
"""

import argparse
import json
from pathlib import Path

from engine.atomic import atomic_write_json
from engine.boundary_train import fold_sequences, merged_means
from engine.embedding import Embedder
from engine.embedding.network import BACKBONES, DEFAULT_BACKBONE, DEFAULT_WEIGHTS, Backbone, save_head
from engine.embedding.train import LateStages, cache_features, list_sequences, train_head
from engine.evaluation import compare_table, default_session_factory, run_semi_supervised
from engine.propagation import PropagationConfig


def evaluate(davis_root: Path, sequences: list[str], embedder: Embedder, cache: Path) -> dict:
    make = default_session_factory(embedding_cache=cache, config=PropagationConfig(boundary_head="none"),
                                   embedder=embedder)
    return run_semi_supervised(davis_root, None, sequences, make_session_fn=make).to_json()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("davis_root", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--embedding-cache", type=Path, required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--iters", type=int, help="training steps (default: the recipe's)")
    p.add_argument("--seed", type=int, help="training seed (default: the recipe's)")
    p.add_argument("--backbone", choices=sorted(BACKBONES), help="default: the recipe's")
    p.add_argument("--tune-from", type=int, metavar="BLOCK", help="fine-tune the backbone's blocks from BLOCK on")
    p.add_argument("--late-lr", type=float, default=0.1, help="their learning rate, as a fraction of the head's")
    p.add_argument("--distractors", type=float, default=0.0,
                   help="probability of another sequence's frame among a pair's background references")
    args = p.parse_args()
    recipe = json.loads((DEFAULT_WEIGHTS.parent / "training.json").read_text())
    for key in ("iters", "seed", "backbone"):
        if getattr(args, key) is not None:
            recipe[key] = getattr(args, key)
    backbone = recipe.get("backbone", DEFAULT_BACKBONE)
    names = list_sequences(args.davis_root)
    features = cache_features(args.davis_root, args.out / "features", names, backbone=Backbone(backbone),
                              frame_step=recipe["train_frame_step"])
    shipped = Embedder.load()
    runs = {"shipped head": {"sequences": {}}, "head trained without the fold (k-fold)": {"sequences": {}}}
    for k, held in enumerate(fold_sequences(names, args.folds)):
        path = args.out / f"fold{k}" / "head.pt"
        if not path.exists():
            late = LateStages(Backbone(backbone), args.tune_from) if args.tune_from is not None else None
            head = train_head(features, [s for s in names if s not in held], dim=recipe["dim"],
                              hidden=recipe["hidden"], margin=recipe["margin"], iters=recipe["iters"],
                              lr=recipe["lr"], seed=recipe["seed"], first_frame_ref=recipe["first_frame_ref"],
                              backbone=backbone, late_stages=late, late_lr=args.late_lr,
                              distractors=args.distractors)
            path.parent.mkdir(parents=True, exist_ok=True)
            if late is not None:
                head.backbone_state = late.tuned_state()
            save_head(head, path, meta={"held_out": held, "recipe": recipe["command"], "iters": recipe["iters"],
                                        "backbone": backbone, "tune_from": args.tune_from, "late_lr": args.late_lr,
                                        "distractors": args.distractors})
        for name, embedder in (("shipped head", shipped),
                               ("head trained without the fold (k-fold)", Embedder.load(weights=path))):
            runs[name]["sequences"].update(evaluate(args.davis_root, held, embedder, args.embedding_cache)["sequences"])
        print(f"fold {k}: {', '.join(held)}", flush=True)
    runs = {name: merged_means(r) for name, r in runs.items()}
    table = compare_table(runs)
    atomic_write_json(args.out / "kfold.json", {"folds": args.folds, "table": table, "runs": runs})
    print(table)


if __name__ == "__main__":
    main()
