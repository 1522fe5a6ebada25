"""The searcher and the scheduler of a sweep, built from its space.

- optuna: Optuna's TPE, multivariate and grouped (the decay parameters exist only for some trials, and TPE should
  model the parameters jointly), with the constant liar (trials run `max_concurrent` at a time: running trials count
  as bad so that concurrent proposals spread out). It learns the trial score of search.outcome: a finished trial as
  COMPLETE with its score; a trial ASHA stopped as PRUNED with its score at each rung it reached, which TPE ranks below
  finished trials, then by the last step and the score there; a trial that raised as FAIL. Steps are progress steps
  (thousandths of each trial's own schedule, trainable.metrics.STEP), so trials stopped at one rung rank by score,
  whatever their epochs.
- random / grid: Ray's BasicVariantGenerator; grid runs every combination of the choices, plus each point to evaluate.
- asha: Ray's ASHAScheduler on each trial's progress steps through its own schedule (rungs at fractions of it, in
  whole thousandths), by score.
"""

from __future__ import annotations

from optuna.samplers import TPESampler
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from search import outcome
from search.space import Space
from trainable.metrics import SCORE, STEP, STEPS


class ScoredOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, telling Optuna the trial score per epoch and the trial's end as search.outcome sees it.

    Ray's own class reports every result at its report count and ends every trial COMPLETE with its *last* value,
    also when ASHA stopped it; here a trial's value is its score (its best), at the last of ASHA's rungs it has
    reached (`rungs`, progress steps; the end of the schedule is one too). TPE ranks pruned trials by their last step
    first: steps that are rungs make a 60- and a 100-epoch trial stopped at the same rung equals, ranked by score.
    Epochs as steps ranked the 100-epoch one first whatever it scored; so would its own step just past the rung."""

    def __init__(self, *args, rungs: list[int] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self._points = sorted({*rungs, STEPS})
        self._reported_steps: dict[str, int] = {}

    def _step(self, progress_step: int) -> int:
        """The step a report counts at: the last rung (or the end) it has reached; before the first rung, its own."""
        return max((p for p in self._points if p <= progress_step), default=progress_step)

    def _unknown(self, trial_id: str) -> bool:
        """A trial Ray resumes that this searcher never proposed: Ray restored it from an experiment state newer than
        the searcher's own saved state (two files of one snapshot; on object storage a driver killed between their
        uploads leaves one without the other). The trial goes on; the searcher learns nothing from it."""
        return trial_id not in self._ot_trials

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or self._unknown(trial_id) or SCORE not in result or STEP not in result:
            return
        step = self._step(int(result[STEP]))
        if step > self._reported_steps.get(trial_id, -1):  # the first report at a rung, as ASHA sees it; once
            self._ot_trials[trial_id].report(float(result[SCORE]), step=step)
            self._reported_steps[trial_id] = step

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or self._unknown(trial_id):
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
            space.define_by_run,
            metric=SCORE,
            mode="max",
            sampler=sampler,
            points_to_evaluate=points,
            rungs=space.rungs(),
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
    rf = space.asha["reduction_factor"]
    return ASHAScheduler(time_attr=STEP, max_t=STEPS, grace_period=space.grace_step(), reduction_factor=rf)
