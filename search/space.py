"""Search-space files (spaces/*.yaml): loading, validation, and translation for Optuna and Ray Tune.

The format is documented in spaces/README.md. Every problem is a SpaceError naming the file and the key, raised
before Ray starts.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.distributions import KINDS, Choice, Distribution, Milestones
from trainable.cli import did_you_mean
from trainable.config import (
    ALIASES,
    BACKBONES,
    CONDITIONAL,
    DEFAULTS,
    HPARAMS_DOC,
    ConfigError,
    acts,
    as_run,
    validate,
    with_defaults,
)
from trainable.files import read_document
from trainable.metrics import STEPS
from trainable.storage import Store

SEARCHERS = ("optuna", "random", "grid")
TRIAL_SEEDS = ("shared", "per_trial")  # every trial gets the space's `seed` hyperparameter, or one of its own
SCHEDULERS = ("asha", "fifo")
DISTRIBUTIONS = (*KINDS, "fixed")  # a parameter's kind in a space file
TOP_KEYS = {
    "name": str,
    "description": str,
    "searcher": str,
    "scheduler": str,
    "num_samples": int,
    "max_concurrent": int,
    "seed": int,
    "trial_seeds": str,
    "resources": dict,
    "asha": dict,
    "confirm": dict,
    "max_failures": int,
    "settings": dict,
    "fixed": dict,
    "params": dict,
    "points_to_evaluate": list,
}


def param_text(v) -> str:
    """A param as people read it: 4 significant digits, lists as 20, 50, 80 (exact values: the leaderboard)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(param_text(x) for x in v) or "none"
    return str(v)


class SpaceError(ValueError):
    """A problem in a space file: the message starts with 'file: key:'."""


@dataclass
class Space:
    path: Path
    name: str
    params: dict[str, Distribution]
    fixed: dict[str, Any]
    settings: dict[str, Any]
    searcher: str = "optuna"
    scheduler: str = "asha"
    num_samples: int = 10
    max_concurrent: int = 1
    seed: int = 0
    trial_seeds: str = "shared"
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1, "gpu": 0})
    # ASHA's rungs are fractions of each trial's own schedule (trainable.metrics.PROGRESS), not epochs: a 100- and a
    # 200-epoch trial are compared at the same point of their LR schedules (spaces/README.md, "Early stopping").
    asha: dict[str, float] = field(default_factory=lambda: {"grace_period": 0.1, "reduction_factor": 3})
    # search.confirm's defaults: the `top` best configurations, re-trained on the other folds of `folds`.
    confirm: dict[str, int] = field(default_factory=lambda: {"top": 3, "folds": 5})
    max_failures: int = 2
    points_to_evaluate: list[dict] = field(default_factory=list)
    description: str = ""

    # -----------------------------------------------------------------------------------------------------------
    def epochs_values(self) -> list:
        """Every value of `epochs` a trial of this space can have."""
        p = self.params.get("epochs")
        return [self.fixed.get("epochs", DEFAULTS["epochs"])] if p is None else p.points()

    def searched_names(self) -> list[str]:
        """The hyperparameters the sweep searches, as recorded (decay milestones as decay_epochs; per-trial seeds)."""
        return [p.hp for p in self.params.values()] + (["seed"] if self.trial_seeds == "per_trial" else [])

    def trial_count(self) -> int:
        """How many trials the sweep runs: num_samples, or for grid every combination plus each point."""
        if self.searcher != "grid":
            return self.num_samples
        return math.prod(len(p.values) for p in self.params.values()) + len(self.points_to_evaluate)

    def grace_step(self) -> int:
        """ASHA's first rung in progress steps (trainable.metrics.STEP): the grace period's fraction, in thousandths."""
        return max(1, round(self.asha["grace_period"] * STEPS))

    def rungs(self) -> list[int]:
        """ASHA's rungs below the end of the schedule, in progress steps, as Ray's ASHAScheduler computes them (max_t =
        STEPS): grace 0.1 and factor 3 give 100, 300 and 900, exactly 10 %, 30 % and 90 % of every trial's schedule."""
        if self.scheduler != "asha":
            return []
        g, rf = self.grace_step(), self.asha["reduction_factor"]
        count = int(math.log(STEPS / g) / math.log(rf) + 1)
        # A rung of a fractional factor (100 x 1.5**2 = 225, x 1.5 = 337.5) is reached at the next whole step.
        return [math.ceil(r) for r in (g * rf**k for k in range(count)) if r < STEPS]

    def hparams(self, config: dict) -> dict:
        """A trial's full hyperparameters: defaults, fixed values and searched ones (milestones -> decay_epochs), and
        its own seed under `trial_seeds: per_trial`."""
        hp = dict(self.fixed)
        hp.update({p.hp: config[p.name] for p in self.params.values() if p.hp == p.name and p.drawn(config)})
        if self.trial_seeds == "per_trial":
            hp["seed"] = int(config["seed"])
        hp = with_defaults(hp)
        for name, p in self.params.items():
            if p.drawn(config):
                hp[p.hp] = p.value(config, hp)
            elif acts(p.hp, hp):
                raise KeyError(name)  # only a parameter that does not act may be left undrawn (define_by_run)
        hp["decay_epochs"] = decays_that_happen(hp["decay_epochs"], hp["epochs"])
        return as_run(hp, searched=self.params)

    def trial_seed(self, number: int) -> int:
        """The seed of the sweep's trial number `number` (0, 1, ...) under `trial_seeds: per_trial`."""
        return int(np.random.SeedSequence([self.seed, number]).generate_state(1)[0] % 2**31)

    def draw_order(self) -> list[str]:
        """The searched parameters, those that decide whether others act (trainable.config.CONDITIONAL) first."""
        deciders = set(CONDITIONAL.values())
        return sorted(self.params, key=lambda n: n not in deciders)

    def define_by_run(self, trial) -> dict | None:
        """Optuna define-by-run: a parameter is drawn only where it acts (trainable.config.acts: decay milestones and
        gamma under the step schedule, mask_resolution for FPN backbones), and of the milestone fractions only those
        in use, so that TPE learns only values that ran and Optuna's params are the recorded hyperparameters."""
        drawn: dict = {}
        for name in self.draw_order():
            p = self.params[name]
            if acts(p.hp, with_defaults({**self.fixed, **drawn})):
                drawn.update(p.suggest(trial))
        # Constants returned here join the trial's config without being searched (TPE does not model them).
        return {"seed": self.trial_seed(trial.number)} if self.trial_seeds == "per_trial" else None

    def param_space(self) -> dict:
        """Ray Tune param space for the random and grid searchers (grid: over every choice parameter)."""
        from ray import tune

        space: dict = {}
        for p in self.params.values():
            space.update(p.domain(grid=self.searcher == "grid"))
        if self.trial_seeds == "per_trial":  # drawn from the searcher's seeded random state
            space["seed"] = tune.randint(0, 2**31 - 1)
        return space

    def searched_point(self, point: dict) -> dict:
        """A user-facing point (hyperparameter names, decay_epochs in epochs) -> the searcher's parameter names."""
        out = {}
        epochs = self.point_epochs(point)
        for p in self.params.values():
            if p.hp in point:  # else a conditional parameter that does not act in this point
                out.update(p.to_config(point[p.hp], epochs))
        return out

    def point_epochs(self, point: dict) -> float:
        return point.get("epochs", self.fixed.get("epochs", DEFAULTS["epochs"]))


def decays_that_happen(decay_epochs: list, epochs: float) -> list:
    """The decays a trial of `epochs` epochs makes: inside (0, epochs), one per epoch (schedulers need increasing
    steps). A decay at or after the last epoch never happens, so it is neither run nor recorded."""
    return sorted({d for d in decay_epochs if 0 < d < epochs})


# ---------------------------------------------------------------------------------------------------------------
# Loading and validation


def _err(path: Path, key: str, msg: str) -> SpaceError:
    return SpaceError(f"{path}: {key}: {msg}")


def _param(path: Path, name: str, spec: Any) -> Distribution | None:
    """A searched parameter of the space file (None for `fixed`: a constant, not a distribution)."""
    key = f"params.{name}"
    if not isinstance(spec, dict) or len(set(spec) & set(DISTRIBUTIONS)) != 1:
        raise _err(path, key, f"expected exactly one of {list(DISTRIBUTIONS)}, got {spec!r}")
    kind = next(k for k in spec if k in DISTRIBUTIONS)
    extra = set(spec) - {kind} - set(KINDS[kind].options if kind in KINDS else ())
    if extra:
        raise _err(path, key, f"unknown key(s) {sorted(extra)} for a {kind} parameter")
    if kind == "fixed":
        return None

    def fail(suffix: str, message: str):
        raise _err(path, key + suffix, message)

    p = KINDS[kind].parse(name, spec, fail)
    if name == "backbone" and isinstance(p, Choice) and (bad := [b for b in p.values if b not in BACKBONES]):
        raise _err(path, key, f"unknown backbone(s) {bad}; choose from {sorted(BACKBONES)}")
    return p


def load_space(path: str | Path | Store) -> Space:
    """Read and fully validate a space file (a local one, or a sweep's copy on object storage)."""
    path = path if isinstance(path, Store) else Path(path)
    doc = read_document(path, SpaceError)
    if not isinstance(doc, dict):
        raise SpaceError(f"{path}: expected a mapping of sweep settings at the top level")
    for key, value in doc.items():
        if key not in TOP_KEYS:
            raise _err(path, key, f"unknown key; {did_you_mean(key, TOP_KEYS, 'see spaces/README.md for the format')}")
        want = TOP_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, want):
            raise _err(path, key, f"expected {want.__name__}, got {type(value).__name__} {value!r}")

    params: dict[str, Distribution] = {}
    fixed = dict(doc.get("fixed") or {})
    for name, spec in (doc.get("params") or {}).items():
        if name != "decay" and name not in DEFAULTS:
            hint = did_you_mean(name, [*DEFAULTS, "decay"], HPARAMS_DOC, ALIASES)
            raise _err(path, f"params.{name}", f"unknown hyperparameter; {hint}")
        p = _param(path, name, spec)
        if p is None:
            fixed[name] = spec["fixed"]
        else:
            params[name] = p
    if "decay" in params and "decay_epochs" in fixed:
        raise _err(path, "fixed.decay_epochs", "set either fixed decay_epochs or a searched decay, not both")
    for name in fixed:
        if name in params:
            raise _err(path, f"fixed.{name}", "is also a searched parameter")
    if not params:
        raise _err(path, "params", "no searched parameter")

    space = Space(
        path=path, name=doc.get("name", path.stem), params=params, fixed=fixed, settings=dict(doc.get("settings") or {})
    )
    for key in (
        "searcher",
        "scheduler",
        "num_samples",
        "max_concurrent",
        "seed",
        "trial_seeds",
        "max_failures",
        "description",
    ):
        if key in doc:
            setattr(space, key, doc[key])
    check_choices(space, path)
    if space.trial_seeds not in TRIAL_SEEDS:
        raise _err(path, "trial_seeds", f"{space.trial_seeds!r} is not one of {list(TRIAL_SEEDS)}")
    if space.trial_seeds == "per_trial" and ("seed" in space.params or "seed" in space.fixed):
        raise _err(path, "trial_seeds", "per_trial draws each trial's seed: do not also set the seed hyperparameter")
    if space.num_samples < 1 or space.max_concurrent < 1 or space.max_failures < 0:
        raise _err(path, "num_samples", "num_samples and max_concurrent must be >= 1, max_failures >= 0")
    space.resources = _resources(path, doc.get("resources", {"cpu": 1, "gpu": 0}))
    space.asha = _asha(path, doc.get("asha", {}))
    space.confirm = _confirm(path, doc.get("confirm", {}))
    _check_corners(path, space)
    space.points_to_evaluate = [_point(path, i, pt, space) for i, pt in enumerate(doc.get("points_to_evaluate", []))]
    return space


def check_choices(space: Space, path: Path | str) -> None:
    """Searcher and scheduler names (also used for CLI overrides)."""
    if space.searcher not in SEARCHERS:
        raise _err(Path(path), "searcher", f"{space.searcher!r} is not one of {list(SEARCHERS)}")
    if space.scheduler not in SCHEDULERS:
        raise _err(Path(path), "scheduler", f"{space.scheduler!r} is not one of {list(SCHEDULERS)}")
    if space.searcher == "grid" and not all(isinstance(p, Choice) for p in space.params.values()):
        raise _err(Path(path), "searcher", "grid needs every searched parameter to be a choice")


def _resources(path: Path, r: dict) -> dict[str, float]:
    unknown = set(r) - {"cpu", "gpu"}
    if unknown:
        raise _err(path, "resources", f"unknown key(s) {sorted(unknown)}; use cpu and gpu")
    out = {"cpu": r.get("cpu", 1), "gpu": r.get("gpu", 0)}
    for k, v in out.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise _err(path, f"resources.{k}", f"expected a number >= 0, got {v!r}")
    return out


def _asha(path: Path, a: dict) -> dict[str, float]:
    unknown = set(a) - {"grace_period", "reduction_factor"}
    if unknown:
        raise _err(path, "asha", f"unknown key(s) {sorted(unknown)}; use grace_period and reduction_factor")
    out = {"grace_period": a.get("grace_period", 0.1), "reduction_factor": a.get("reduction_factor", 3)}
    g, rf = out["grace_period"], out["reduction_factor"]
    if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g < 1:
        raise _err(
            path,
            "asha.grace_period",
            f"expected a fraction of each trial's schedule in (0, 1) (the first rung; e.g. 0.1), got {g!r}",
        )
    if isinstance(rf, bool) or not isinstance(rf, (int, float)) or rf < 2:
        raise _err(path, "asha.reduction_factor", f"expected a number >= 2, got {rf!r}")
    return out


def _confirm(path: Path, c: dict) -> dict[str, int]:
    unknown = set(c) - {"top", "folds"}
    if unknown:
        raise _err(path, "confirm", f"unknown key(s) {sorted(unknown)}; use top and folds")
    out = {"top": c.get("top", 3), "folds": c.get("folds", 5)}
    for k, least in (("top", 1), ("folds", 2)):
        if isinstance(out[k], bool) or not isinstance(out[k], int) or out[k] < least:
            raise _err(path, f"confirm.{k}", f"expected an integer >= {least}, got {out[k]!r}")
    return out


# Hyperparameters whose valid values depend on one another (trainable.config's checks: weights and norm, warm-up and
# decays against epochs, mask resolution against backbone): corners combine every end of these; every other
# parameter's ends are checked one at a time.
JOINT = ("backbone", "weights", "norm", "epochs", "warmup_epochs", "decay", "mask_resolution")


def corners(space: Space) -> list[dict]:
    """Configs at the corners of the space: every combination of the JOINT parameters' choices and range ends (the
    fewest decays at the earliest fraction and the most at the latest), then each end of every other parameter,
    the rest at their first ends. Cross-parameter problems show at a corner; every choice appears in one."""
    axes = {name: p.ends() for name, p in space.params.items()}
    joint = [a for n, a in axes.items() if n in JOINT]
    first = {k: v for n, a in axes.items() if n not in JOINT for k, v in a[0].items()}
    configs = [{**first, **{k: v for part in combo for k, v in part.items()}} for combo in itertools.product(*joint)]
    configs += [{**configs[0], **end} for n, a in axes.items() if n not in JOINT for end in a[1:]]
    if space.trial_seeds == "per_trial":
        configs = [{**c, "seed": 0} for c in configs]
    return configs


def _check_corners(path: Path, space: Space) -> None:
    """Refuse, before Ray starts, what could only fail in a trial: every corner must make a valid trial config, and
    searched decays must be able to happen (cheap checks: no data, no model, no download)."""
    for name in space.fixed:
        if name not in DEFAULTS:
            hint = did_you_mean(name, DEFAULTS, HPARAMS_DOC, ALIASES)
            raise _err(path, f"fixed.{name}", f"unknown hyperparameter; {hint}")
    p = space.params.get("warmup_epochs")
    warmup_max = space.fixed.get("warmup_epochs", DEFAULTS["warmup_epochs"]) if p is None else p.largest()
    epochs_min = min(space.epochs_values())
    if warmup_max > epochs_min:
        raise _err(
            path,
            "params.warmup_epochs" if p else "warmup_epochs",
            f"up to {warmup_max:g} warm-up epochs, but a trial can have as few as {epochs_min:g} epochs",
        )
    failures = []
    for config in corners(space):
        try:
            validate(space.hparams(config))
        except ConfigError as e:
            failures.append((config, str(e)))
    if failures:
        config, message = failures[0]
        searched = {k: v for k, v in config.items() if k in space.params}
        # A problem of the fixed values shows at every corner; one that needs searched values, with them.
        every = len(failures) == len(corners(space)) and len({m for _, m in failures}) == 1
        raise _err(path, "fixed" if every or not searched else f"fixed (with {searched})", message)
    d = space.params.get("decay")
    if isinstance(d, Milestones) and all(max(1, round(d.low * e)) >= e for e in space.epochs_values()):
        raise _err(
            path,
            "params.decay",
            f"fractions [{d.low}, {d.high}] of {sorted(space.epochs_values())} epochs never fall before the last "
            "epoch: no trial would decay its learning rate",
        )


def _point(path: Path, i: int, point: Any, space: Space) -> dict:
    key = f"points_to_evaluate[{i}]"
    if not isinstance(point, dict):
        raise _err(path, key, f"expected a mapping of hyperparameters, got {point!r}")
    searched = {p.hp for p in space.params.values()}
    try:
        full = with_defaults({**space.fixed, **{k: v for k, v in point.items() if k in searched}})
    except ConfigError as e:
        raise _err(path, key, str(e)) from None
    needed = {n for n in searched if acts(n, full)}  # a conditional parameter where it acts
    missing, extra = needed - set(point), set(point) - searched
    if missing or extra:
        raise _err(path, key, f"must set exactly the searched parameters that act in it {sorted(needed)}")
    point = {k: v for k, v in point.items() if k in needed}
    epochs = space.point_epochs(point)
    for p in space.params.values():
        if p.hp in point and (problem := p.problem(point[p.hp], epochs)):
            raise _err(path, f"{key}.{p.hp}", problem)
    return space.searched_point(point)


def describe(space: Space) -> str:
    """One line per searched parameter, for logs and --help-like summaries."""
    return "\n".join(f"  {p.text()}" for p in space.params.values())
