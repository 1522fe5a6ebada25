"""Search-space validation: each malformed file gives one line naming the file and key, exit 2, and no Ray."""

import textwrap

import pytest
import yaml

from search import run
from search.space import SpaceError, load_space
from tests.conftest import ROOT
from trainable.config import DEFAULTS

GOOD = textwrap.dedent(
    """\
    name: t
    settings: {data: sample_data/nuclei, split: {val: 1}}
    fixed: {backbone: R18-FPN, weights: scratch, warmup_epochs: 0.5}
    params:
      lr: {loguniform: [0.001, 0.1]}
      epochs: {int: [2, 4]}
      decay: {milestones: [0.2, 0.9], count: [1, 3]}
    """
)

BAD = [
    ("bogus: 1\n", "bogus: unknown key"),
    ("num_samples: three\n", "num_samples: expected int"),
    ("params:\n  lr: {loguniform: [0.1, 0.001]}\n", "params.lr: empty or inverted range"),
    ("params:\n  lr: {uniform: [0.1, 0.1]}\n", "params.lr: empty or inverted range"),
    ("params:\n  lr: {loguniform: [0, 0.1]}\n", "params.lr: log range must be > 0"),
    ("params:\n  backbone: {choice: [R50-FPN, R34-C4]}\n", "params.backbone: unknown backbone(s) ['R34-C4']"),
    ("params:\n  backbone: {choice: []}\n", "params.backbone: choice needs a non-empty list"),
    ("params:\n  lr: {normal: [0, 1]}\n", "params.lr: expected exactly one of"),
    ("params:\n  learning_rate: {uniform: [0, 1]}\n", "params.learning_rate: unknown hyperparameter"),
    ("params:\n  epochs: {int: [1.5, 3]}\n", "params.epochs: expected an integer"),
    ("params:\n  decay: {milestones: [0.2, 1.5]}\n", "params.decay: milestones are fractions"),
    ("params:\n  decay: {milestones: [0.2, 0.5], count: [3, 1]}\n", "params.decay.count: need 1 <= min <= max"),
    ("searcher: bayes\n", "searcher: 'bayes' is not one of"),
    ("scheduler: hyperband\n", "scheduler: 'hyperband' is not one of"),
    ("asha: {grace_period: 10}\n", "asha.grace_period: expected a fraction of each trial's schedule in (0, 1)"),
    ("resources: {gpu: -1}\n", "resources.gpu: expected a number >= 0"),
    ("fixed: {backbone: R18-FPN, weights: imagenet, warmup_epochs: 1}\n", "fixed: no ImageNet weights for R18-FPN"),
    ("fixed: {backbone: R18-FPN, weights: scratch, crop: 3}\n", "fixed.crop: unknown hyperparameter"),
    ("points_to_evaluate:\n  - {lr: 0.01}\n", "points_to_evaluate[0]: must set exactly the searched parameters"),
    (
        "points_to_evaluate:\n  - {lr: 5.0, epochs: 3, decay_epochs: [2]}\n",
        "points_to_evaluate[0].lr: 5.0 is outside",
    ),
    (
        "settings: {data: sample_data/nuclei, split: {val: 1}, eval_evry: 2}\n",
        "settings: unknown setting 'eval_evry'; did you mean 'eval_every'?",
    ),
    ("trial_seeds: random\n", "trial_seeds: 'random' is not one of ['shared', 'per_trial']"),
    (
        "trial_seeds: per_trial\nfixed: {backbone: R18-FPN, weights: scratch, warmup_epochs: 1, seed: 3}\n",
        "trial_seeds: per_trial draws each trial's seed",
    ),
    (
        "settings: {data: sample_data/nuclei, split: {val: 1}, num_workers: 2}\nresources: {cpu: 2}\n",
        "settings.num_workers: 2 loader processes and the trial's own exceed the 2 CPU(s) a trial reserves",
    ),
    ("settings: {data: sample_data/nuclei, split: {val: 1}, amp: fp16}\n", "settings.amp: fp16 needs a GPU per trial"),
    ("settings: {data: sample_data/nuclei, split: {val: 1}, amp: fp8}\n", "settings: amp must be one of"),
]


def _write(tmp_path, extra: str):
    """GOOD with `extra` merged in (params merged by name, other top-level keys replaced)."""
    merged, override = yaml.safe_load(GOOD), yaml.safe_load(extra)
    merged["params"] = {**merged["params"], **override.pop("params", {})}
    merged.update(override)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(merged))
    return path


def test_good_space_loads(tmp_path):
    space = load_space(_write(tmp_path, "{}"))
    assert set(space.params) == {"lr", "epochs", "decay"}
    hp = space.hparams({"lr": 0.01, "epochs": 4, "decay_count": 2, "decay_1": 0.8, "decay_2": 0.3})
    assert hp["decay_epochs"] == [1, 3] and hp["backbone"] == "R18-FPN"
    # Fractions rounding to one epoch (0.667 and 0.670 of 40 -> 27, as on the GPU run) give one decay there.
    hp = space.hparams({"lr": 0.01, "epochs": 40, "decay_count": 3, "decay_1": 0.667, "decay_2": 0.67, "decay_3": 0.2})
    assert hp["decay_epochs"] == [8, 27]


@pytest.mark.parametrize("extra,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_space_exit_2_one_line_no_ray(tmp_path, capsys, extra, message):
    import ray

    path = _write(tmp_path, extra)
    code = run.main(["--space", str(path), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith(f"error: {path}: ") and message in err, err
    assert not ray.is_initialized()
    assert not (tmp_path / "results").exists()


def test_files_that_are_not_spaces(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert run.main(["--space", str(missing)]) == 2
    assert f"error: {missing}: file not found" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("params: {lr: [\n")
    assert run.main(["--space", str(broken)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    with pytest.raises(SpaceError, match="expected a mapping"):
        broken.write_text("- 1\n- 2\n")
        load_space(broken)


def test_bad_flags_and_data(tmp_path, capsys):
    space = _write(tmp_path, "{}")
    assert run.main(["--space", str(space), "--num-samples", "0"]) == 2
    assert "--num-samples must be > 0" in capsys.readouterr().err
    assert run.main(["--space", str(space), "--searcher", "nope"]) == 2
    assert "searcher: 'nope' is not one of" in capsys.readouterr().err
    assert run.main(["--space", str(space), "--data", str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing'}: dataset folder not found" in capsys.readouterr().err
    assert run.main(["--resume", "--results", str(tmp_path / "empty")]) == 2
    assert "no sweep found" in capsys.readouterr().err


def test_shipped_spaces_are_valid():
    for name in ("maskrcnn.yaml", "smoke.yaml"):
        space = load_space(ROOT / "spaces" / name)
        assert space.points_to_evaluate
    real = load_space(ROOT / "spaces" / "maskrcnn.yaml")
    assert set(real.params["backbone"].values) == {"R50-C4", "R50-FPN", "R101-C4", "R101-FPN"}
    seed = real.hparams(real.points_to_evaluate[0])
    assert seed["decay_epochs"] == [20, 50, 80, 90] and seed["epochs"] == 120 and seed["lr"] == 0.01
    report = {"backbone": "R50-C4", "weights": "imagenet", "warmup_epochs": 3.0, "gamma": 0.1, "brightness": 0.2}
    assert {k: seed[k] for k in report} == report and seed["lr_schedule"] == "step"
    # The levers start where the report was (Detectron2's defaults); flips are fixed, not searched.
    for lever in ("stain", "contrast", "scale", "scale_jitter", "rpn_nms", "roi_positive_fraction", "mask_resolution"):
        assert lever in real.params and seed[lever] == DEFAULTS[lever], lever
    assert real.fixed["hflip"] == real.fixed["vflip"] == 0.5 and not {"hflip", "vflip"} & set(real.params)
    # The demo runs stain jitter, quarter turns and the cosine schedule.
    smoke = load_space(ROOT / "spaces" / "smoke.yaml")
    demo = smoke.hparams(smoke.points_to_evaluate[0])
    assert demo["stain"] > 0 and demo["rot90"] > 0 and demo["lr_schedule"] == "cosine" and demo["decay_epochs"] == []


def test_trial_seeds_shared_by_default_or_one_per_trial(tmp_path):
    import optuna

    shared = load_space(_write(tmp_path, "fixed: {backbone: R18-FPN, weights: scratch, warmup_epochs: 1, seed: 7}"))
    config = {"lr": 0.01, "epochs": 4, "decay_count": 1, "decay_1": 0.5}
    assert shared.trial_seeds == "shared" and shared.hparams(config)["seed"] == 7
    assert "seed" not in shared.param_space()

    own = load_space(_write(tmp_path, "trial_seeds: per_trial"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seeds = [own.define_by_run(study.ask())["seed"] for _ in range(4)]
    assert len(set(seeds)) == 4 and seeds == [own.trial_seed(n) for n in range(4)]  # by trial number: reproducible
    assert own.hparams({**config, "seed": seeds[2]})["seed"] == seeds[2]
    assert "seed" in own.param_space()  # random and grid searchers draw it from their seeded random state


def test_loader_workers_follow_the_cpus_of_a_trial(tmp_path):
    for cpus, workers in ((1, 0), (2, 1), (4, 3), (0.5, 0)):
        space = load_space(_write(tmp_path, f"resources: {{cpu: {cpus}}}"))
        settings = run.Settings.from_dict({"data": "x"})
        run.fit_to_resources(settings, space, "s.yaml")
        assert settings.num_workers == workers


def test_recorded_hyperparameters_are_the_ones_that_run(tmp_path):
    """Defaults included; a decay at or after the last epoch is neither run nor recorded."""
    space = load_space(_write(tmp_path, "params:\n  epochs: {int: [2, 4]}\n  decay: {milestones: [0.5, 0.9]}\n"))
    two = space.hparams({"lr": 0.01, "epochs": 2, "decay_1": 0.8})
    assert two["decay_epochs"] == [] and two["gamma"] == 0.1 and two["seed"] == 0 and two["crop_size"] == 500
    assert space.hparams({"lr": 0.01, "epochs": 4, "decay_1": 0.8})["decay_epochs"] == [3]
    plain = tmp_path / "plain.yaml"  # a space that sets neither epochs nor anything else but lr
    plain.write_text("fixed: {backbone: R18-FPN, weights: scratch}\nparams: {lr: {loguniform: [0.001, 0.1]}}\n")
    hp = load_space(plain).hparams({"lr": 0.01})
    assert hp["epochs"] == 120 and hp["decay_epochs"] == [20, 50, 80, 90] and hp["warmup_epochs"] == 3.0


def test_corners_of_the_real_space_reach_every_choice(tmp_path):
    # 17 searched parameters: their full product is millions of corners. Cut to the first 4,096, every corner had
    # backbone R50-C4 and imagenet weights, so the driver fetched none of the other model-zoo files.
    from search.space import corners

    real = load_space(ROOT / "spaces" / "maskrcnn.yaml")
    found = corners(real)
    assert len(found) < 200
    assert {(c["backbone"], c["weights"]) for c in found} == {
        (b, w) for b in real.params["backbone"].values for w in real.params["weights"].values
    }
    for name, p in real.params.items():
        if p.kind == "choice":
            assert {c[name] for c in found} == set(p.values), name
    # An end that only a late parameter reaches is still checked before Ray starts.
    text = (ROOT / "spaces" / "maskrcnn.yaml").read_text()
    (tmp_path / "late.yaml").write_text(
        text.replace("mask_resolution: {choice: [14, 28]}", "mask_resolution: {choice: [14, 20]}")
    )
    with pytest.raises(SpaceError, match="mask_resolution must be one of"):
        load_space(tmp_path / "late.yaml")
    # A resolution the user fixed is not reset for a C4 model, as a searched one is: it is refused.
    fixed_c4 = _write(tmp_path, "fixed: {backbone: R50-C4, weights: scratch, warmup_epochs: 0.5, mask_resolution: 28}")
    with pytest.raises(SpaceError, match="fixed: mask_resolution 28 needs an FPN backbone"):
        load_space(fixed_c4)


def test_each_distribution_round_trips_its_values_and_refuses_what_is_outside():
    """search.distributions: a value of a point to evaluate -> the searcher's config -> the trial's value again; its
    ends belong to it; a value outside is named."""
    import optuna

    from search.distributions import Choice, Int, LogUniform, Milestones, Uniform

    for d, inside, outside in (
        (Choice("backbone", ["R50-FPN", "R50-C4"]), "R50-C4", "R18-FPN"),
        (Int("epochs", 100, 200, 10), 150, 210),
        (Uniform("brightness", 0.0, 0.3), 0.1, 0.5),
        (LogUniform("lr", 1e-3, 1e-1), 0.01, 1.0),
        (Milestones("decay", 0.1, 0.9, (1, 3)), [20, 50, 80], [5]),
    ):
        config = d.to_config(inside, 100)
        assert set(config) <= set(d.keys()) and d.drawn(config)
        assert d.value(config, {"epochs": 100}) == inside and d.problem(inside, 100) is None
        assert d.problem(outside, 100), d.kind
        for end in d.ends():
            assert set(end) <= set(d.keys()) and d.drawn(end)
        assert set(d.domain()) == set(d.keys())
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
        drawn = d.suggest(trial)
        assert set(trial.params) <= set(d.keys()) and d.drawn(trial.params)
        assert drawn == ({} if d.hp != d.name else {d.name: trial.params[d.name]})
