"""The checkpoint folder of a trial report: model.pth (weights), trainer.pth (optimizer, LR scheduler, iteration),
config.yaml (Detectron2 config) and state.json (epoch, metrics, hyperparameters).

Resuming needs trainer.pth of the latest checkpoint only; a best checkpoint is used for its weights. Without
trainer.pth an R50-FPN checkpoint is half the size (SGD momentum is one more copy of the parameters).
"""

from __future__ import annotations

from pathlib import Path

TRAINER_STATE = "trainer.pth"


def strip_trainer_state(checkpoints: list[Path], latest: Path) -> None:
    """Drop trainer.pth from every checkpoint folder but `latest`."""
    for d in checkpoints:
        if Path(d) != Path(latest):
            Path(d, TRAINER_STATE).unlink(missing_ok=True)
