"""The click model's k-fold with another number of training steps: the experiment of resources/clicks/README.md,
"Twice the steps" (measured, not shipped). Run from a checkout:

    python resources/clicks/experiments/train_steps.py STEPS SEED OUT [DAVIS_ROOT] [EMBEDDING_CACHE]

It is `vos-engine train --click-model --folds 5 --seed SEED --out OUT` with STEPS instead of the recipe's
engine.click_model_train.STEPS; then `vos-engine interactive-eval ROOT --kfold OUT BOUNDARY_FOLDS` scores it.
"""

import sys
from pathlib import Path

from engine import click_model_train as cmt

if __name__ == "__main__":
    steps, seed, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    root = sys.argv[4] if len(sys.argv) > 4 else "../shared/data/davis2016-train"
    cache = sys.argv[5] if len(sys.argv) > 5 else None
    out.mkdir(parents=True, exist_ok=True)
    result = cmt.run_kfold(root, 5, seed=seed, steps=steps, embedding_cache=cache, out_dir=out, fold_weights_dir=out)
    print(cmt.kfold_table(result))
