"""The checkpoint folder of a trial report: model.pth (weights), trainer.pth (optimizer, LR scheduler, iteration),
config.yaml (Detectron2 config) and state.json (epoch, metrics, hyperparameters).

Resuming needs trainer.pth of the checkpoint it resumes from only; a best checkpoint is used for its weights. Without
trainer.pth an R50-FPN checkpoint is half the size (SGD momentum is one more copy of the parameters). A checkpoint
that lost it still resumes (trainable.train.run_trial): its weights, with a fresh optimizer at its iteration.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

TRAINER_STATE = "trainer.pth"


def strip_trainer_state(checkpoints: list[Path], latest: Path, keep: Iterable[Path] = ()) -> None:
    """Drop trainer.pth from every checkpoint folder but `latest` and those in `keep`."""
    kept = {Path(latest), *map(Path, keep)}
    for d in checkpoints:
        if Path(d) not in kept:
            Path(d, TRAINER_STATE).unlink(missing_ok=True)
