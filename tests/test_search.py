"""The search's decisions, with Ray's and Optuna's real classes fed constructed results (no training): the trial score,
early stopping on each trial's own schedule, TPE's options, grid with points, the status rule."""

import math
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from search import outcome
from search.searchers import build_scheduler, build_search
from search.space import load_space
from trainable.metrics import METRIC, PROGRESS, SCORE, STEP, STEPS, progress_step, report_iterations

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

    def at(epoch, epochs=4):
        return {"epoch": epoch, PROGRESS: epoch / epochs, STEP: progress_step(epoch, epochs)}

    # Finished: its last val_map50 (0.15) is below its best (0.4); Optuna must learn 0.4.
    run("done", [{**at(e), METRIC: v, SCORE: b} for e, v, b in ((2, 0.4, 0.4), (4, 0.15, 0.4))])
    # Stopped by ASHA at half its schedule: its reports at 25 % and 50 % count at the rungs they passed (10 %, 30 %).
    run("cut", [{**at(e), METRIC: v, SCORE: v} for e, v in ((1, 0.1), (2, 0.2))])
    # Diverged: an unstable configuration scores 0.
    run("nan", [{**at(1), METRIC: 0.0, SCORE: 0.0, "failure_reason": "loss became NaN/Inf"}])
    done, cut, nan = searcher._ot_study.trials
    assert done.state == TrialState.COMPLETE and done.value == pytest.approx(0.4)
    assert cut.state == TrialState.PRUNED and cut.intermediate_values == {100: 0.1, 300: 0.2}
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
            result = {
                "epoch": epoch,
                PROGRESS: epoch / epochs_of[name],
                STEP: progress_step(epoch, epochs_of[name]),
                SCORE: best[name],
                "training_iteration": epoch,
            }
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
    ray_rungs = build_scheduler(space)._brackets[0]._rungs
    assert space.rungs() == sorted(r for r, _ in ray_rungs if r < STEPS) == [100, 300, 900]  # what Ray's ASHA checks
    # 135 epochs of 20 iterations, validation every 7 epochs: each rung (10 %, 30 %, 90 %) gets a report of its own,
    # at most one epoch past it, where ASHA sees a step >= the rung.
    max_iter = 135 * 20
    done = report_iterations(max_iter, 20, 7, space.rungs())
    for r in space.rungs():
        first = min(d for d in done if progress_step(d, max_iter) >= r)
        assert r / STEPS * 135 <= first / 20 < r / STEPS * 135 + 1
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


def test_rungs_land_at_the_documented_epochs(tmp_path):
    """grace 0.1, factor 3: a 100-, 150- or 200-epoch trial validates at exactly 10 %, 30 % and 90 % of its epochs
    (in floats 0.1 x 3 > 0.3 put the 30 % rung one epoch late: 31, 46, 61), and ASHA records it at each rung there."""
    space = _space(tmp_path, asha={"grace_period": 0.1, "reduction_factor": 3}, params={"epochs": {"int": [100, 200]}})
    for epochs in (100, 150, 200):
        ipe = 20
        done = report_iterations(epochs * ipe, ipe, epochs + 1, space.rungs())  # eval_every past the end: rungs only
        assert sorted(d // ipe for d in done) == [epochs // 10, 3 * epochs // 10, 9 * epochs // 10, epochs]
        scheduler = build_scheduler(space)
        scheduler.set_search_properties(SCORE, "max")
        trial = Trial("__fake", trial_id=f"e{epochs}", stub=True)
        scheduler.on_trial_add(None, trial)
        for d in sorted(done)[:-1]:
            result = {STEP: progress_step(d, epochs * ipe), SCORE: 0.1, "training_iteration": d}
            scheduler.on_trial_result(None, trial, result)
        recorded = [m for m, seen in scheduler._brackets[0]._rungs if trial.trial_id in seen]
        assert sorted(recorded) == [100, 300, 900]


def test_tpe_ranks_trials_stopped_at_one_rung_by_score_not_by_their_epochs(tmp_path):
    """Among pruned trials TPE prefers the last step first, then the score. A 65-epoch trial at 0.50 and a 100-epoch
    one at 0.10, both stopped at the 30 % rung, must rank by score: with epochs as steps (20 < 30) the long one won."""
    from optuna.samplers._tpe.sampler import _split_pruned_trials

    space = _space(tmp_path, asha={"grace_period": 0.1, "reduction_factor": 3}, params={"epochs": {"int": [60, 100]}})
    searcher, _, _ = build_search(space)
    for trial_id, epochs, value in (("short", 65, 0.5), ("long", 100, 0.1)):
        searcher.suggest(trial_id)
        reports = sorted(report_iterations(epochs, 1, 5, space.rungs()))
        for e in reports:
            result = {"epoch": e, PROGRESS: e / epochs, STEP: progress_step(e, epochs), SCORE: value}
            searcher.on_trial_result(trial_id, result)
            if result[STEP] >= 300:  # ASHA stops it at its 30 % rung (the 65-epoch one at epoch 20, step 307)
                searcher.on_trial_complete(trial_id, result)
                break
    pruned = searcher._ot_study.trials
    assert [t.state for t in pruned] == [TrialState.PRUNED] * 2
    assert [max(t.intermediate_values) for t in pruned] == [300, 300]
    better, _ = _split_pruned_trials(pruned, searcher._ot_study, 1)
    assert better[0].number == pruned[0].number  # the short trial, at 0.50


def test_optuna_draws_a_parameter_only_where_it_acts():
    """The real space: decays and gamma only under the step schedule, mask_resolution only for FPN backbones; every
    parameter Optuna holds is the hyperparameter the trial records (the leaderboard's), through TPE's own proposals."""
    import random

    from search.space import load_space
    from trainable.config import as_run

    space = load_space(Path(__file__).resolve().parents[1] / "spaces" / "maskrcnn.yaml")
    searcher, _, _ = build_search(space)
    rng, seen = random.Random(0), set()
    for i in range(24):  # past TPE's 10 start-up trials
        config = searcher.suggest(f"t{i}")
        params = searcher._ot_trials[f"t{i}"].params
        hp = space.hparams(config)
        assert as_run(hp, searched=space.params) == hp
        cosine, c4 = hp["lr_schedule"] == "cosine", not hp["backbone"].endswith("FPN")
        seen.add((cosine, c4))
        decays = {k for k in params if k.startswith("decay_")}
        assert bool(decays) == ("gamma" in params) == (not cosine)
        assert ("mask_resolution" in params) == (not c4)
        for k, v in params.items():
            if not k.startswith("decay_"):
                assert hp[k] == v, (k, v, hp[k])
        if not cosine:
            fractions = sorted(params[f"decay_{j}"] for j in range(1, params["decay_count"] + 1))
            assert hp["decay_epochs"] == sorted({round(f * hp["epochs"]) for f in fractions})
        result = {"epoch": hp["epochs"], PROGRESS: 1.0, STEP: STEPS, SCORE: rng.random()}
        searcher.on_trial_result(f"t{i}", result)
        searcher.on_trial_complete(f"t{i}", result)
    assert len(seen) == 4  # both schedules with both kinds of backbone


def test_the_progress_table_names_a_best_trial_that_lacks_a_conditional_parameter(capsys):
    """Ray's progress table on the real space: a best trial without mask_resolution (a C4 model) or decays (a cosine
    schedule) is shown, not a KeyError that ends Tuner.fit (its "current best trial" line looks up every column)."""
    import time

    from ray.tune.utils.log import Verbosity, set_verbosity

    from search import tuning
    from search.run import progress_columns

    space = load_space(Path(__file__).resolve().parents[1] / "spaces" / "maskrcnn.yaml")
    columns = progress_columns(space)
    config = {k: 1 for k in columns}  # every key a trial of this space always has; no conditional one
    reporter = tuning.progress_table(columns, ["epoch", "val_map50"])
    reporter.setup(start_time=time.time(), metric="val_map50", mode="max")
    trial = Trial("trial", config=config, stub=True)
    trial.update_last_result({"val_map50": 0.2, "epoch": 1, "time_total_s": 1.0, "config": config})
    trial.set_status(Trial.RUNNING)
    set_verbosity(Verbosity.V0_MINIMAL)  # the best-trial line without the table (a stub trial has no folder to show)
    try:
        reporter.report([trial], False)
    finally:
        set_verbosity(Verbosity.V3_TRIAL_DETAILS)  # Ray's default
    assert f"Current best trial: {trial.trial_id} with val_map50=0.2" in capsys.readouterr().out
    assert "mask_resolution" in space.params and not any(k.startswith(("mask_resolution", "decay")) for k in columns)


def test_a_resumed_trial_the_restored_searcher_never_proposed_runs_on(tmp_path):
    """Ray may restore an experiment state that names a trial its restored searcher state does not (a driver killed
    between the two uploads of one snapshot to object storage): the trial's reports and its end reach a searcher
    that never proposed it, and must not raise (a KeyError there stopped Tuner.fit on the resumed S3 sweep)."""
    space = _space(tmp_path, searcher="optuna", params={"lr": {"loguniform": [0.001, 0.1]}})
    searcher, _, _ = build_search(space)
    searcher.suggest("known")
    result = {"epoch": 1, PROGRESS: 1.0, STEP: STEPS, SCORE: 0.3}
    searcher.on_trial_result("lost", result)
    searcher.on_trial_complete("lost", result)
    searcher.on_trial_complete("known", result)
    assert [t.state for t in searcher._ot_study.trials] == [TrialState.COMPLETE]  # it learnt from its own trial only
