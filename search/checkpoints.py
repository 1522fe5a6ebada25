"""A trial's checkpoints in the sweep folder: which one is best, and keeping only what resuming needs.

Each report writes a checkpoint folder (model.pth, trainer.pth, config.yaml, state.json); Ray keeps the best by
val_map50 and the latest (`CheckpointConfig(num_to_keep=1)`). Only the latest is ever resumed from, so the others keep
their weights and lose trainer.pth (optimizer, LR scheduler: as large as the model again).
"""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune import Callback

from trainable.checkpoints import strip_trainer_state
from trainable.metrics import METRIC


def best_checkpoint(trial_dir: Path) -> Path | None:
    """The trial's checkpoint folder with the highest val_map50 (ties: the earlier epoch)."""
    best, best_value = None, -1.0
    for d in sorted(trial_dir.glob("checkpoint_*")):
        state = d / "state.json"
        if state.is_file():
            value = json.loads(state.read_text())["metrics"].get(METRIC, -1.0)
            if value > best_value:
                best, best_value = d, value
    return best


class TrainerStatePruner(Callback):
    """Ray Tune driver callback: after each new checkpoint of a trial, drop trainer.pth from its older ones."""

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if trial.storage:
            strip_trainer_state(sorted(Path(trial.storage.trial_fs_path).glob("checkpoint_*")), Path(checkpoint.path))
