"""A trial's checkpoints in the sweep folder: keeping only what resuming needs (search.sweep finds the best).

Each report writes a checkpoint folder (model.pth, trainer.pth, config.yaml, state.json); Ray keeps the best by
val_map50 and the latest (`CheckpointConfig(num_to_keep=1)`). A trial resumes from its latest checkpoint as Ray's
experiment state records it, so checkpoints that Ray can no longer restore from keep their weights and lose
trainer.pth (optimizer, LR scheduler: as large as the model again): see TrainerStatePruner.
"""

from __future__ import annotations

from ray.tune import Callback

from trainable.checkpoints import P, strip_trainer_state
from trainable.storage import Store

RESTORABLE_BEFORE_NEW = 2  # checkpoints before a trial's new one that Ray may still restore it from (see below)


def restorable_checkpoints(checkpoints: list[P], new: P) -> set[P]:
    """The checkpoints of a trial that Ray may restore it from when `new` has just been reported: `new` and those
    up to RESTORABLE_BEFORE_NEW before it in Ray's numbering (checkpoint_000000, checkpoint_000001, ...; a name
    without a number is kept too).

    Ray restores a trial from the latest checkpoint named in the experiment state on storage, a snapshot that lags
    the checkpoints: `on_checkpoint` fires before Ray has even registered the new one (TuneController.
    _process_trial_save), and the snapshot that records it (forced after every checkpoint of a trial, since
    CheckpointConfig(num_to_keep=1) in search.tuning.run_config: _ExperimentCheckpointManager.on_trial_checkpoint)
    is written at the end of the controller's step and uploaded in the background. Uploads run one at a time, and
    the snapshot forced after checkpoint k waits for the upload before it (the one after k-1) to finish. So when
    checkpoint k+1 comes, storage names checkpoint k-1 or later (the snapshot after k may still be uploading), and
    a driver killed now resumes the trial from k+1, k or k-1: nothing older is restorable any more. (Stripping all
    but the new one, as before, left the checkpoint a killed driver resumed from without its optimizer state.)"""

    def index(d: P) -> int | None:
        number = d.name.rpartition("_")[2]
        return int(number) if number.isdigit() else None

    n = index(new)
    if n is None:
        return {new, *checkpoints}
    return {new} | {d for d in checkpoints if index(d) is None or n - RESTORABLE_BEFORE_NEW <= index(d)}


class TrainerStatePruner(Callback):
    """Ray Tune driver callback: drops trainer.pth from the checkpoints of a trial that Ray can no longer restore.

    On each new checkpoint of a trial: from those older than restorable_checkpoints. At the end of the experiment:
    from all but the latest of each finished (TERMINATED) trial, which Ray never restores; Ray calls
    on_experiment_end after its final snapshot (forced, and awaited: ray.tune.tune.run), which records them as
    such. (Only where Tuner.fit itself raises does Ray end without that snapshot; a trial resumed then from a
    checkpoint without trainer.pth still goes on, from its weights: trainable.train.run_trial.)"""

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if trial.storage:
            checkpoints, new = _checkpoints(trial), _store(trial, checkpoint.path)
            strip_trainer_state(checkpoints, new, keep=restorable_checkpoints(checkpoints, new))

    def on_experiment_end(self, trials, **info):
        from ray.tune.experiment import Trial

        for trial in trials:
            if trial.status == Trial.TERMINATED and trial.storage and trial.checkpoint:
                strip_trainer_state(_checkpoints(trial), _store(trial, trial.checkpoint.path))


def _store(trial, path: str) -> Store:
    """`path` on the trial's storage (a local folder or object storage), as Ray's StorageContext names it."""
    return Store.on(trial.storage.storage_filesystem, path)


def _checkpoints(trial) -> list[Store]:
    return _store(trial, trial.storage.trial_fs_path).glob("checkpoint_*")
