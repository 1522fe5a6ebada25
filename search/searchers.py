"""The searcher and the scheduler of a sweep, built from its space.

- optuna: Optuna's TPE, multivariate and grouped (the decay parameters exist only for some trials, and TPE should
  model the parameters jointly), with the constant liar (trials run `max_concurrent` at a time: running trials count
  as bad so that concurrent proposals spread out). It learns the trial score of search.outcome: a finished trial as
  COMPLETE with its score; a trial ASHA stopped as PRUNED with its score per epoch, which TPE ranks below finished
  trials and by how far they got; a trial that raised as FAIL.
- random / grid: Ray's BasicVariantGenerator; grid runs every combination of the choices, plus each point to evaluate.
- asha: Ray's ASHAScheduler on each trial's progress through its own schedule (rungs at fractions of it), by score.
"""

from __future__ import annotations

from optuna.samplers import TPESampler
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from search import outcome
from search.space import Space
from trainable.metrics import PROGRESS, SCORE


class ScoredOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, telling Optuna the trial score per epoch and the trial's end as search.outcome sees it.

    Ray's own class reports every result at its report count and ends every trial COMPLETE with its *last* value,
    also when ASHA stopped it; here a trial's value is its score (its best), at its epoch."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or SCORE not in result:
            return
        step, reported = int(result["epoch"]), self.__dict__.setdefault("_reported_steps", {})
        if step > reported.get(trial_id, 0):  # an epoch run again after a restart is reported once
            self._ot_trials[trial_id].report(float(result[SCORE]), step=step)
            reported[trial_id] = step

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        last = result or {}
        self.on_trial_result(trial_id, last)  # the result ASHA stopped a trial on reaches a searcher only here
        ended = outcome.status("ERROR" if error else "TERMINATED", last)
        value = outcome.score(last)
        if ended == "error" or value != value:  # raised, or never reported: nothing to learn from
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        elif ended == "stopped_early":
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)  # Optuna keeps its reported scores
        else:
            self._ot_study.tell(ot_trial, value, state=TrialState.COMPLETE)
        self._completed_trials.add(trial_id)


def build_search(space: Space):
    """(search algorithm, Ray param_space, num_samples) for the space's searcher."""
    points = space.points_to_evaluate or None
    if space.searcher == "optuna":
        sampler = TPESampler(seed=space.seed, multivariate=True, group=True, constant_liar=True)
        searcher = ScoredOptunaSearch(
            space.define_by_run, metric=SCORE, mode="max", sampler=sampler, points_to_evaluate=points
        )
        return searcher, {}, space.num_samples
    param_space = space.param_space()
    generator = BasicVariantGenerator(points_to_evaluate=points, random_state=space.seed)
    # Each point replaces one sample (Ray's rule); grid: one sample is the whole grid, so the points come on top.
    num_samples = 1 + len(space.points_to_evaluate) if space.searcher == "grid" else space.num_samples
    return generator, param_space, num_samples


def build_scheduler(space: Space):
    if space.scheduler != "asha":
        return FIFOScheduler()
    return ASHAScheduler(time_attr=PROGRESS, max_t=1.0, **space.asha)
