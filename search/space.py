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

SEARCHERS = ("optuna", "random", "grid")
TRIAL_SEEDS = ("shared", "per_trial")  # every trial gets the space's `seed` hyperparameter, or one of its own
SCHEDULERS = ("asha", "fifo")
DISTRIBUTIONS = ("choice", "int", "uniform", "loguniform", "fixed", "milestones")
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


def hp_name(param: str) -> str:
    """The hyperparameter a searched parameter sets: `decay` (milestones) sets decay_epochs, the others their own."""
    return "decay_epochs" if param == "decay" else param


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
class Param:
    """One searched hyperparameter. `milestones` samples sorted fractions of `epochs` -> decay_epochs."""

    name: str
    kind: str
    values: list = field(default_factory=list)  # choice
    low: float = 0.0
    high: float = 0.0
    step: int | float | None = None  # int
    count: tuple[int, int] = (1, 1)  # milestones: how many (a range makes it searched)


@dataclass
class Space:
    path: Path
    name: str
    params: dict[str, Param]
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
        if p is None:
            return [self.fixed.get("epochs", DEFAULTS["epochs"])]
        if p.kind == "choice":
            return list(p.values)
        if p.kind == "int":
            return list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
        return [p.low, p.high]

    def searched_names(self) -> list[str]:
        """The hyperparameters the sweep searches, as recorded (decay milestones as decay_epochs; per-trial seeds)."""
        names = [n for n in self.params if n != "decay"] + (["decay_epochs"] if "decay" in self.params else [])
        return names + (["seed"] if self.trial_seeds == "per_trial" else [])

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
        for name, p in self.params.items():
            if p.kind != "milestones" and name in config:
                hp[name] = config[name]
        if self.trial_seeds == "per_trial":
            hp["seed"] = int(config["seed"])
        hp = with_defaults(hp)
        for name, p in self.params.items():
            if p.kind == "milestones" and f"{name}_1" in config:
                n = int(config.get(f"{name}_count", p.count[0]))
                fractions = sorted(config[f"{name}_{i}"] for i in range(1, n + 1))
                hp["decay_epochs"] = [max(1, round(f * hp["epochs"])) for f in fractions]
            elif (p.kind == "milestones" or name not in config) and acts(hp_name(name), hp):
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
            if not acts(hp_name(name), with_defaults({**self.fixed, **drawn})):
                continue
            if p.kind == "choice":
                drawn[name] = trial.suggest_categorical(name, p.values)
            elif p.kind == "int":
                drawn[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1))
            elif p.kind in ("uniform", "loguniform"):
                drawn[name] = trial.suggest_float(name, p.low, p.high, log=p.kind == "loguniform")
            elif p.kind == "milestones":
                n = trial.suggest_int(f"{name}_count", *p.count) if p.count[0] != p.count[1] else p.count[0]
                for i in range(1, n + 1):
                    trial.suggest_float(f"{name}_{i}", p.low, p.high)
        # Constants returned here join the trial's config without being searched (TPE does not model them).
        return {"seed": self.trial_seed(trial.number)} if self.trial_seeds == "per_trial" else None

    def param_space(self) -> dict:
        """Ray Tune param space for the random and grid searchers (grid: over every choice parameter)."""
        from ray import tune

        space: dict = {}
        for name, p in self.params.items():
            if p.kind == "choice":
                space[name] = tune.grid_search(p.values) if self.searcher == "grid" else tune.choice(p.values)
            elif p.kind == "int":
                space[name] = tune.qrandint(int(p.low), int(p.high), int(p.step or 1))
            elif p.kind == "uniform":
                space[name] = tune.uniform(p.low, p.high)
            elif p.kind == "loguniform":
                space[name] = tune.loguniform(p.low, p.high)
            elif p.kind == "milestones":
                if p.count[0] != p.count[1]:
                    space[f"{name}_count"] = tune.randint(p.count[0], p.count[1] + 1)
                for i in range(1, p.count[1] + 1):
                    space[f"{name}_{i}"] = tune.uniform(p.low, p.high)
        if self.trial_seeds == "per_trial":  # drawn from the searcher's seeded random state
            space["seed"] = tune.randint(0, 2**31 - 1)
        return space

    def searched_point(self, point: dict) -> dict:
        """A user-facing point (hyperparameter names, decay_epochs in epochs) -> the searcher's parameter names."""
        out = {}
        epochs = point.get("epochs", self.fixed.get("epochs", DEFAULTS["epochs"]))
        for name, p in self.params.items():
            if hp_name(name) not in point:  # a conditional parameter that does not act in this point
                continue
            if p.kind == "milestones":
                decays = sorted(point["decay_epochs"])
                if p.count[0] != p.count[1]:
                    out[f"{name}_count"] = len(decays)
                out.update({f"{name}_{i}": d / epochs for i, d in enumerate(decays, start=1)})
            else:
                out[name] = point[name]
        return out


def decays_that_happen(decay_epochs: list, epochs: float) -> list:
    """The decays a trial of `epochs` epochs makes: inside (0, epochs), one per epoch (schedulers need increasing
    steps). A decay at or after the last epoch never happens, so it is neither run nor recorded."""
    return sorted({d for d in decay_epochs if 0 < d < epochs})


# ---------------------------------------------------------------------------------------------------------------
# Loading and validation


def _err(path: Path, key: str, msg: str) -> SpaceError:
    return SpaceError(f"{path}: {key}: {msg}")


def _number(path: Path, key: str, v: Any, integer: bool = False) -> float:
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        raise _err(path, key, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
    return v


def _range(path: Path, key: str, v: Any, integer: bool = False) -> tuple[float, float]:
    if not (isinstance(v, list) and len(v) == 2):
        raise _err(path, key, f"expected [low, high], got {v!r}")
    low, high = (_number(path, key, x, integer) for x in v)
    if not low < high:
        raise _err(path, key, f"empty or inverted range [{low}, {high}]")
    return low, high


def _param(path: Path, name: str, spec: Any) -> Param:
    key = f"params.{name}"
    if not isinstance(spec, dict) or len(set(spec) & set(DISTRIBUTIONS)) != 1:
        raise _err(path, key, f"expected exactly one of {list(DISTRIBUTIONS)}, got {spec!r}")
    kind = next(k for k in spec if k in DISTRIBUTIONS)
    extra = set(spec) - {kind} - ({"step"} if kind == "int" else {"count"} if kind == "milestones" else set())
    if extra:
        raise _err(path, key, f"unknown key(s) {sorted(extra)} for a {kind} parameter")
    v = spec[kind]
    if kind == "choice":
        if not isinstance(v, list) or not v:
            raise _err(path, key, f"choice needs a non-empty list, got {v!r}")
        if name == "backbone":
            bad = [b for b in v if b not in BACKBONES]
            if bad:
                raise _err(path, key, f"unknown backbone(s) {bad}; choose from {sorted(BACKBONES)}")
        return Param(name, kind, values=list(v))
    if kind == "fixed":
        return Param(name, kind, values=[v])
    if kind == "int":
        low, high = _range(path, key, v, integer=True)
        step = _number(path, f"{key}.step", spec.get("step", 1), integer=True)
        if step < 1 or (high - low) % step:
            raise _err(path, f"{key}.step", f"step {step} must be >= 1 and divide high - low ({high - low})")
        return Param(name, kind, low=low, high=high, step=step)
    if kind == "uniform":
        low, high = _range(path, key, v)
        return Param(name, kind, low=float(low), high=float(high))
    if kind == "loguniform":
        low, high = _range(path, key, v)
        if low <= 0:
            raise _err(path, key, f"log range must be > 0, got [{low}, {high}]")
        return Param(name, kind, low=float(low), high=float(high))
    # milestones: fractions of epochs
    if name != "decay":
        raise _err(path, key, "milestones is only for the parameter named 'decay' (it sets decay_epochs)")
    low, high = _range(path, key, v)
    if not (0 < low and high < 1):
        raise _err(path, key, f"milestones are fractions of the epochs: need 0 < low < high < 1, got [{low}, {high}]")
    count = spec.get("count", 1)
    if isinstance(count, int) and not isinstance(count, bool):
        count = [count, count]
    if not (isinstance(count, list) and len(count) == 2) or not all(isinstance(c, int) for c in count):
        raise _err(path, f"{key}.count", f"expected an integer or [min, max], got {count!r}")
    if not 1 <= count[0] <= count[1]:
        raise _err(path, f"{key}.count", f"need 1 <= min <= max, got {count}")
    return Param(name, kind, low=float(low), high=float(high), count=(count[0], count[1]))


def load_space(path: str | Path) -> Space:
    """Read and fully validate a space file."""
    path = Path(path)
    doc = read_document(path, SpaceError)
    if not isinstance(doc, dict):
        raise SpaceError(f"{path}: expected a mapping of sweep settings at the top level")
    for key, value in doc.items():
        if key not in TOP_KEYS:
            raise _err(path, key, f"unknown key; {did_you_mean(key, TOP_KEYS, 'see spaces/README.md for the format')}")
        want = TOP_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, want):
            raise _err(path, key, f"expected {want.__name__}, got {type(value).__name__} {value!r}")

    params: dict[str, Param] = {}
    fixed = dict(doc.get("fixed") or {})
    for name, spec in (doc.get("params") or {}).items():
        if name != "decay" and name not in DEFAULTS:
            hint = did_you_mean(name, [*DEFAULTS, "decay"], HPARAMS_DOC, ALIASES)
            raise _err(path, f"params.{name}", f"unknown hyperparameter; {hint}")
        p = _param(path, name, spec)
        if p.kind == "fixed":
            fixed[name] = p.values[0]
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
    if space.searcher == "grid" and any(p.kind != "choice" for p in space.params.values()):
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
    axes: dict[str, list[dict]] = {}
    for name, p in space.params.items():
        if p.kind == "choice":
            axes[name] = [{name: v} for v in p.values]
        elif p.kind == "int":
            axes[name] = [{name: int(p.low)}, {name: int(p.high)}]
        elif p.kind in ("uniform", "loguniform"):
            axes[name] = [{name: p.low}, {name: p.high}]
        elif p.kind == "milestones":
            axes[name] = [
                {f"{name}_count": n, **{f"{name}_{i}": f for i in range(1, n + 1)}}
                for n, f in ((p.count[0], p.low), (p.count[1], p.high))
            ]
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
    if p is None:
        warmup_max = space.fixed.get("warmup_epochs", DEFAULTS["warmup_epochs"])
    else:
        warmup_max = max(p.values) if p.kind == "choice" else p.high
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
    if d is not None and all(max(1, round(d.low * e)) >= e for e in space.epochs_values()):
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
    searched = {hp_name(n) for n in space.params}
    try:
        full = with_defaults({**space.fixed, **{k: v for k, v in point.items() if k in searched}})
    except ConfigError as e:
        raise _err(path, key, str(e)) from None
    needed = {n for n in searched if acts(n, full)}  # a conditional parameter where it acts
    missing, extra = needed - set(point), set(point) - searched
    if missing or extra:
        raise _err(path, key, f"must set exactly the searched parameters that act in it {sorted(needed)}")
    point = {k: v for k, v in point.items() if k in needed}
    out = space.searched_point(point)
    for name, p in space.params.items():
        if hp_name(name) not in point:
            continue
        if p.kind == "choice" and out[name] not in p.values:
            raise _err(path, f"{key}.{name}", f"{out[name]!r} is not among the choices {p.values}")
        if p.kind in ("int", "uniform", "loguniform") and not p.low <= out[name] <= p.high:
            raise _err(path, f"{key}.{name}", f"{out[name]!r} is outside [{p.low}, {p.high}]")
        if p.kind == "milestones":
            n = len(point["decay_epochs"])
            fr = [out[f"{name}_{j}"] for j in range(1, n + 1)]
            if not p.count[0] <= n <= p.count[1] or not all(p.low <= f <= p.high for f in fr):
                raise _err(
                    path,
                    f"{key}.decay_epochs",
                    f"needs {p.count} decays within fractions [{p.low}, {p.high}] of epochs, got {fr}",
                )
    return out


def describe(space: Space) -> str:
    """One line per searched parameter, for logs and --help-like summaries."""
    lines = []
    for p in space.params.values():
        if p.kind == "choice":
            lines.append(f"  {p.name}: choice {p.values}")
        elif p.kind == "milestones":
            lines.append(f"  decay_epochs: {p.count[0]}-{p.count[1]} sorted fractions in [{p.low}, {p.high}] of epochs")
        else:
            lines.append(f"  {p.name}: {p.kind} [{p.low}, {p.high}]" + (f" step {p.step}" if p.step else ""))
    return "\n".join(lines)
