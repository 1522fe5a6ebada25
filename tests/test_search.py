"""The search's decisions, with Ray's and Optuna's real classes fed constructed results (no training): the trial score,
early stopping on each trial's own schedule, TPE's options, grid with points, the status rule."""

import math

import pytest
import yaml
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search import outcome
from search.searchers import build_scheduler, build_search
from search.space import load_space
from trainable.metrics import METRIC, PROGRESS, SCORE
from trainable.train import report_iterations

BASE = {
    "name": "t",
    "settings": {"data": "x"},
    "fixed": {"backbone": "R18-FPN", "weights": "scratch", "warmup_epochs": 0.5},
}


def _space(tmp_path, **doc):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**BASE, **doc}))
    return load_space(path)


def test_status_and_score_rule():
    assert outcome.status("TERMINATED", {PROGRESS: 1.0, SCORE: 0.3}) == "finished"
    assert outcome.status("TERMINATED", {PROGRESS: 0.3, SCORE: 0.3}) == "stopped_early"
    assert outcome.status("RUNNING", {PROGRESS: 0.3}) == "unfinished"
    assert outcome.status("PENDING", {}) == "unfinished"  # a trial the time budget stopped before it started
    assert outcome.status("TERMINATED", {PROGRESS: 0.4, "failure_reason": "loss became NaN/Inf"}) == "failed"
    assert outcome.status("ERROR", {PROGRESS: 0.4}) == "error"
    assert outcome.score({SCORE: 0.25, METRIC: 0.1}) == 0.25 and math.isnan(outcome.score({}))


def test_optuna_learns_the_trial_score_and_stopped_trials_as_pruned(tmp_path):
    space = _space(tmp_path, searcher="optuna", params={"lr": {"loguniform": [0.001, 0.1]}})
    searcher, _, _ = build_search(space)
    sampler = searcher._sampler
    assert (sampler._multivariate, sampler._group, sampler._constant_liar) == (True, True, True)

    def run(trial_id, reports):
        searcher.suggest(trial_id)
        for r in reports:
            searcher.on_trial_result(trial_id, r)
        searcher.on_trial_complete(trial_id, reports[-1])

    # Finished: its last val_map50 (0.15) is below its best (0.4); Optuna must learn 0.4.
    run("done", [{"epoch": e, PROGRESS: e / 4, METRIC: v, SCORE: b} for e, v, b in ((2, 0.4, 0.4), (4, 0.15, 0.4))])
    # Stopped by ASHA at half its schedule.
    run("cut", [{"epoch": e, PROGRESS: e / 4, METRIC: v, SCORE: v} for e, v in ((1, 0.1), (2, 0.2))])
    # Diverged: an unstable configuration scores 0.
    run("nan", [{"epoch": 1, PROGRESS: 0.25, METRIC: 0.0, SCORE: 0.0, "failure_reason": "loss became NaN/Inf"}])
    done, cut, nan = searcher._ot_study.trials
    assert done.state == TrialState.COMPLETE and done.value == pytest.approx(0.4)
    assert cut.state == TrialState.PRUNED and cut.intermediate_values == {1: 0.1, 2: 0.2}
    assert nan.state == TrialState.COMPLETE and nan.value == 0.0


def _learning_curve(epoch: int, epochs: int, decay_fraction: float) -> float:
    """val_map50 of a constructed trial: rising with training, +0.1 once its learning rate has decayed."""
    return 0.3 * (1 - math.exp(-epoch / 50)) + (0.1 if epoch > round(decay_fraction * epochs) else 0.0)


def _stopped(scheduler, epochs_of: dict, report_epochs: dict) -> dict:
    """Feed both trials' reports in wall-clock order (an epoch costs the same in both) -> {trial: stopped at epoch}."""
    trials = {name: Trial("__fake", trial_id=name, stub=True) for name in epochs_of}
    for t in trials.values():
        scheduler.on_trial_add(None, t)
    stopped, best = {}, dict.fromkeys(trials, 0.0)
    for epoch in range(1, max(epochs_of.values()) + 1):
        for name, t in trials.items():
            if name in stopped or epoch > epochs_of[name] or epoch not in report_epochs[name]:
                continue
            best[name] = max(best[name], _learning_curve(epoch, epochs_of[name], 0.1))
            result = {"epoch": epoch, PROGRESS: epoch / epochs_of[name], SCORE: best[name], "training_iteration": epoch}
            if scheduler.on_trial_result(None, t, result) == TrialScheduler.STOP and epoch < epochs_of[name]:
                stopped[name] = epoch
    return stopped


def test_a_long_schedule_is_not_stopped_because_its_decay_comes_later(tmp_path):
    # Both trials decay their LR at 10 % of their schedule; the 200-epoch one ends better (0.39 vs 0.36), but at
    # epoch 20 it has not decayed yet while the 100-epoch one has (0.10 vs 0.20).
    epochs_of = {"short": 100, "long": 200}
    assert _learning_curve(200, 200, 0.1) > _learning_curve(100, 100, 0.1)

    # Rungs in epochs (the design before): the long trial is stopped at its first rung, epoch 20.
    by_epoch = ASHAScheduler(time_attr="epoch", max_t=200, grace_period=20, reduction_factor=2)
    by_epoch.set_search_properties(SCORE, "max")
    every_10 = {n: set(range(10, e + 1, 10)) for n, e in epochs_of.items()}
    assert _stopped(by_epoch, epochs_of, every_10) == {"long": 20}

    # Rungs at fractions of each trial's own schedule, with reports at every rung: the long trial runs to the end.
    space = _space(
        tmp_path,
        scheduler="asha",
        asha={"grace_period": 0.1, "reduction_factor": 2},
        params={"epochs": {"choice": [100, 200]}},
    )
    scheduler = build_scheduler(space)
    scheduler.set_search_properties(SCORE, "max")
    reports = {n: report_iterations(e, 1, 10, space.rungs()) for n, e in epochs_of.items()}
    assert "long" not in _stopped(scheduler, epochs_of, reports)


def test_trials_report_at_every_rung_whatever_their_eval_every(tmp_path):
    space = _space(
        tmp_path,
        scheduler="asha",
        asha={"grace_period": 0.1, "reduction_factor": 3},
        params={"lr": {"loguniform": [0.001, 0.1]}},
    )
    ray_rungs = ASHAScheduler(max_t=1.0, grace_period=0.1, reduction_factor=3)._brackets[0]._rungs
    assert space.rungs() == sorted(r for r, _ in ray_rungs if r < 1.0)  # the rungs Ray's ASHA will check
    # 130 epochs of 20 iterations, validation every 7 epochs: each rung (10 %, 30 %, 90 %) gets a report of its own,
    # at most one epoch past it, where ASHA sees progress >= the rung.
    max_iter = 130 * 20
    done = report_iterations(max_iter, 20, 7, space.rungs())
    for r in space.rungs():
        first = min(d for d in done if d / max_iter >= r)
        assert r * 130 <= first / 20 < r * 130 + 1
    assert max_iter in done and {7 * 20, 14 * 20} <= done


def test_grid_runs_every_combination_and_the_points(tmp_path):
    from ray.tune.experiment import Experiment

    space = _space(
        tmp_path,
        searcher="grid",
        params={"lr": {"choice": [0.01, 0.02]}, "brightness": {"choice": [0.0, 0.1, 0.2]}},
        points_to_evaluate=[{"lr": 0.02, "brightness": 0.1}],
        fixed={**BASE["fixed"], "epochs": 3},
    )
    generator, param_space, num_samples = build_search(space)
    experiment = Experiment("g", run=lambda config: None, config=param_space, num_samples=num_samples)
    generator.add_configurations([experiment])
    configs = []
    while (trial := generator.next_trial()) is not None:
        configs.append(trial.config)
    assert len(configs) == space.trial_count() == 2 * 3 + 1
    assert configs.count({"lr": 0.02, "brightness": 0.1}) == 2  # the point first, then the whole grid
