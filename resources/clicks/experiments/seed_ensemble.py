"""The click model as the mean of the logits of several trainings: the experiment of resources/clicks/README.md,
"An ensemble of seeds". Not part of the engine (it was measured, not shipped); run from a checkout:

    python resources/clicks/experiments/seed_ensemble.py OTHER_FOLDS[,OTHER_FOLDS...] interactive-eval \
        ../shared/data/davis2016-train --kfold CLICK_FOLDS BOUNDARY_FOLDS --embedding-cache /tmp/emb [--user robot]

Every click_model_fold<i>.pt that the command loads from CLICK_FOLDS is joined by the file of the same name in
each OTHER_FOLDS folder (the `--out` of `vos-engine train --click-model --folds 5 --seed S`); the rest of the
arguments go to `vos-engine` unchanged.
"""

import sys
from pathlib import Path

import torch
from torch import nn

from engine import click_model
from engine.cli import main


class MeanLogits(nn.Module):
    """The mean of the nets' logits."""

    def __init__(self, nets):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([net(x) for net in self.nets]).mean(0)


def patch_loader(others: list[Path]) -> None:
    load = click_model.ClickModel.load.__func__

    def load_mean(cls, path=click_model.WEIGHTS):
        first = load(cls, path)
        if not Path(path).name.startswith("click_model_fold"):
            return first
        nets = [first.net] + [load(cls, folder / Path(path).name).net for folder in others]
        return cls(MeanLogits(nets), first.embedding_weights)

    click_model.ClickModel.load = classmethod(load_mean)


if __name__ == "__main__":
    patch_loader([Path(p) for p in sys.argv[1].split(",")])
    sys.argv = ["vos-engine"] + sys.argv[2:]
    sys.exit(main())
