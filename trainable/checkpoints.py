"""The checkpoint folder of a trial report: model.pth (weights), trainer.pth (optimizer, LR scheduler, iteration),
config.yaml (Detectron2 config) and state.json (epoch, metrics, hyperparameters).

Resuming needs trainer.pth of the checkpoint it resumes from only; a best checkpoint is used for its weights. Without
trainer.pth an R50-FPN checkpoint is half the size (SGD momentum is one more copy of the parameters). A checkpoint
that lost it still resumes (trainable.train.run_trial): its weights, with a fresh optimizer at its iteration.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from trainable.metrics import METRIC
from trainable.storage import Store

P = TypeVar("P", Path, Store)  # a checkpoint folder on a local disk, or on a sweep's storage (object storage too)

TRAINER_STATE = "trainer.pth"


def best_checkpoint(checkpoints: Iterable[P], unreadable: Callable[[P, str], Exception]) -> P | None:
    """The checkpoint folder whose report has the highest val_map50 (ties: the first in order; None without a scored
    one): what export ships, MLflow shows and a standalone trial keeps. `unreadable(state.json, why)` is the error
    for a damaged state.json."""
    best, best_value = None, -1.0
    for d in sorted(checkpoints):
        state = d / "state.json"
        if not state.is_file():
            continue
        try:
            metrics = json.loads(state.read_text()).get("metrics")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            raise unreadable(state, "not the JSON a trial writes") from None
        value = metrics.get(METRIC, -1.0) if isinstance(metrics, dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise unreadable(state, f"metrics: expected a mapping with {METRIC}, a number")
        if value > best_value:
            best, best_value = d, value
    return best


def strip_trainer_state(checkpoints: list[P], latest: P, keep: Iterable[P] = ()) -> None:
    """Drop trainer.pth from every checkpoint folder but `latest` and those in `keep`."""
    kept = {latest, *keep}
    for d in checkpoints:
        if d not in kept:
            (d / TRAINER_STATE).unlink(missing_ok=True)
