"""The distribution of a searched parameter, one class per kind of a space file (spaces/README.md), in the manner of
Optuna's distributions: each knows how it is parsed, how Optuna draws it (define-by-run), its Ray Tune domain, its
ends (the space's corner checks), whether a value belongs to it, and its text. `search.space.Space` loops over them.

A parameter's values live in the searcher's config under `keys`: its own name, except `milestones`, which draws
sorted fractions of the epochs (`decay_1`, `decay_2`, ... and `decay_count` when the count is searched) and sets the
hyperparameter decay_epochs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, NoReturn

Fail = Callable[[str, str], NoReturn]  # fail(key suffix, message): raises the space's error for this parameter


def _number(fail: Fail, v: Any, integer: bool = False, key: str = "") -> float:
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok:
        fail(key, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
    return v


def _range(fail: Fail, v: Any, integer: bool = False) -> tuple[float, float]:
    if not (isinstance(v, list) and len(v) == 2):
        fail("", f"expected [low, high], got {v!r}")
    low, high = (_number(fail, x, integer) for x in v)
    if not low < high:
        fail("", f"empty or inverted range [{low}, {high}]")
    return low, high


class Distribution:
    """One searched parameter: `name` in the space file, `kind` its distribution's key there."""

    kind: ClassVar[str]
    options: ClassVar[tuple[str, ...]] = ()  # keys allowed beside the kind (int: step; milestones: count)

    def __init__(self, name: str):
        self.name = name

    @classmethod
    def parse(cls, name: str, spec: dict, fail: Fail) -> Distribution:
        raise NotImplementedError

    @property
    def hp(self) -> str:
        """The hyperparameter it sets."""
        return self.name

    def keys(self) -> list[str]:
        """Its keys in a searcher's config (every one it may draw)."""
        return [self.name]

    def drawn(self, config: dict) -> bool:
        return self.name in config

    def value(self, config: dict, hp: dict) -> Any:
        """The hyperparameter's value in a trial with this config (`hp`: the trial's other hyperparameters)."""
        return config[self.name]

    def to_config(self, value: Any, epochs: float) -> dict:
        """A hyperparameter value (a point to evaluate) -> its keys in the searcher's config."""
        return {self.name: value}

    def problem(self, value: Any, epochs: float) -> str | None:
        """Why `value` (of its hyperparameter, in a point to evaluate of `epochs` epochs) is not one of this
        distribution's, or None."""
        return None

    def suggest(self, trial) -> dict:
        """Draw it with an Optuna trial (define-by-run): {hyperparameter: value} of what the draw decides by itself."""
        raise NotImplementedError

    def domain(self, grid: bool = False) -> dict:
        """{config key: Ray Tune domain} (`grid`: the grid searcher's, where it has one)."""
        raise NotImplementedError

    def ends(self) -> list[dict]:
        """Config fragments at its ends (a choice: each value), for the space's corner checks."""
        raise NotImplementedError

    def points(self) -> list:
        """Every value it can take where they are few (a choice, an int range), else its ends."""
        return [end[self.name] for end in self.ends()]

    def largest(self) -> float:
        return max(self.points())

    def text(self) -> str:
        raise NotImplementedError


class Choice(Distribution):
    kind = "choice"

    def __init__(self, name: str, values: list):
        super().__init__(name)
        self.values = list(values)

    @classmethod
    def parse(cls, name: str, spec: dict, fail: Fail) -> Choice:
        v = spec[cls.kind]
        if not isinstance(v, list) or not v:
            fail("", f"choice needs a non-empty list, got {v!r}")
        return cls(name, v)

    def problem(self, value: Any, epochs: float) -> str | None:
        return None if value in self.values else f"{value!r} is not among the choices {self.values}"

    def suggest(self, trial) -> dict:
        return {self.name: trial.suggest_categorical(self.name, self.values)}

    def domain(self, grid: bool = False) -> dict:
        from ray import tune

        return {self.name: tune.grid_search(self.values) if grid else tune.choice(self.values)}

    def ends(self) -> list[dict]:
        return [{self.name: v} for v in self.values]

    def text(self) -> str:
        return f"{self.name}: choice {self.values}"


class _Range(Distribution):
    def __init__(self, name: str, low: float, high: float):
        super().__init__(name)
        self.low, self.high = low, high

    def problem(self, value: Any, epochs: float) -> str | None:
        return None if self.low <= value <= self.high else f"{value!r} is outside [{self.low}, {self.high}]"

    def ends(self) -> list[dict]:
        return [{self.name: self.low}, {self.name: self.high}]

    def text(self) -> str:
        return f"{self.name}: {self.kind} [{self.low}, {self.high}]"


class Int(_Range):
    kind, options = "int", ("step",)

    def __init__(self, name: str, low: int, high: int, step: int = 1):
        super().__init__(name, low, high)
        self.step = step

    @classmethod
    def parse(cls, name: str, spec: dict, fail: Fail) -> Int:
        low, high = _range(fail, spec[cls.kind], integer=True)
        step = _number(fail, spec.get("step", 1), integer=True, key=".step")
        if step < 1 or (high - low) % step:
            fail(".step", f"step {step} must be >= 1 and divide high - low ({high - low})")
        return cls(name, int(low), int(high), int(step))

    def points(self) -> list:
        return list(range(self.low, self.high + 1, self.step))

    def suggest(self, trial) -> dict:
        return {self.name: trial.suggest_int(self.name, self.low, self.high, step=self.step)}

    def domain(self, grid: bool = False) -> dict:
        from ray import tune

        return {self.name: tune.qrandint(self.low, self.high, self.step)}

    def text(self) -> str:
        return super().text() + f" step {self.step}"


class Uniform(_Range):
    kind = "uniform"
    log: ClassVar[bool] = False

    @classmethod
    def parse(cls, name: str, spec: dict, fail: Fail) -> Uniform:
        low, high = _range(fail, spec[cls.kind])
        if cls.log and low <= 0:
            fail("", f"log range must be > 0, got [{low}, {high}]")
        return cls(name, float(low), float(high))

    def suggest(self, trial) -> dict:
        return {self.name: trial.suggest_float(self.name, self.low, self.high, log=self.log)}

    def domain(self, grid: bool = False) -> dict:
        from ray import tune

        return {self.name: (tune.loguniform if self.log else tune.uniform)(self.low, self.high)}


class LogUniform(Uniform):
    kind, log = "loguniform", True


class Milestones(_Range):
    """Sorted fractions of each trial's epochs -> decay_epochs: `count` of them, a range making the count searched."""

    kind, options = "milestones", ("count",)

    def __init__(self, name: str, low: float, high: float, count: tuple[int, int] = (1, 1)):
        super().__init__(name, low, high)
        self.count = count

    @classmethod
    def parse(cls, name: str, spec: dict, fail: Fail) -> Milestones:
        if name != "decay":
            fail("", "milestones is only for the parameter named 'decay' (it sets decay_epochs)")
        low, high = _range(fail, spec[cls.kind])
        if not (0 < low and high < 1):
            fail("", f"milestones are fractions of the epochs: need 0 < low < high < 1, got [{low}, {high}]")
        count = spec.get("count", 1)
        if isinstance(count, int) and not isinstance(count, bool):
            count = [count, count]
        if not (isinstance(count, list) and len(count) == 2) or not all(isinstance(c, int) for c in count):
            fail(".count", f"expected an integer or [min, max], got {count!r}")
        if not 1 <= count[0] <= count[1]:
            fail(".count", f"need 1 <= min <= max, got {count}")
        return cls(name, float(low), float(high), (count[0], count[1]))

    @property
    def hp(self) -> str:
        return "decay_epochs"

    @property
    def searched_count(self) -> bool:
        return self.count[0] != self.count[1]

    def _key(self, i: int) -> str:
        return f"{self.name}_{i}"

    def keys(self) -> list[str]:
        count = [f"{self.name}_count"] if self.searched_count else []
        return count + [self._key(i) for i in range(1, self.count[1] + 1)]

    def drawn(self, config: dict) -> bool:
        return self._key(1) in config

    def value(self, config: dict, hp: dict) -> list[int]:
        n = int(config.get(f"{self.name}_count", self.count[0]))
        fractions = sorted(config[self._key(i)] for i in range(1, n + 1))
        return [max(1, round(f * hp["epochs"])) for f in fractions]

    def to_config(self, value: Any, epochs: float) -> dict:
        decays = sorted(value)
        count = {f"{self.name}_count": len(decays)} if self.searched_count else {}
        return count | {self._key(i): d / epochs for i, d in enumerate(decays, start=1)}

    def problem(self, value: Any, epochs: float) -> str | None:
        fractions = [d / epochs for d in sorted(value)]
        if self.count[0] <= len(fractions) <= self.count[1] and all(self.low <= f <= self.high for f in fractions):
            return None
        return f"needs {self.count} decays within fractions [{self.low}, {self.high}] of epochs, got {fractions}"

    def suggest(self, trial) -> dict:
        """Only the fractions in use are drawn (the count first where it is searched). Nothing is decided by itself:
        decay_epochs needs the trial's epochs (Space.hparams)."""
        n = trial.suggest_int(f"{self.name}_count", *self.count) if self.searched_count else self.count[0]
        for i in range(1, n + 1):
            trial.suggest_float(self._key(i), self.low, self.high)
        return {}

    def domain(self, grid: bool = False) -> dict:
        from ray import tune

        count = {f"{self.name}_count": tune.randint(self.count[0], self.count[1] + 1)} if self.searched_count else {}
        return count | {self._key(i): tune.uniform(self.low, self.high) for i in range(1, self.count[1] + 1)}

    def ends(self) -> list[dict]:
        """The fewest decays at the earliest fraction, the most at the latest."""
        return [
            {f"{self.name}_count": n, **{self._key(i): f for i in range(1, n + 1)}}
            for n, f in ((self.count[0], self.low), (self.count[1], self.high))
        ]

    def points(self) -> list:
        return [self.low, self.high]

    def text(self) -> str:
        return f"decay_epochs: {self.count[0]}-{self.count[1]} sorted fractions in [{self.low}, {self.high}] of epochs"


KINDS: dict[str, type[Distribution]] = {d.kind: d for d in (Choice, Int, Uniform, LogUniform, Milestones)}
