"""A search space: named parameters that suggest themselves on an Optuna trial.

Example:
    >>> import optuna
    >>> from search_spaces import Space
    >>> space = Space.model_validate({"params": {
    ...     "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    ...     "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
    ...     "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"optimizer": "sgd"}},
    ... }})
    >>> study = optuna.create_study()
    >>> sorted(space.suggest(study.ask()))[:2]
    ['lr', 'optimizer']
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # a space suggests itself on an Optuna trial; reading one needs no Optuna
    import optuna

Choice = bool | int | float | str | None


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: dict[str, Choice | list[Choice]] | None = None
    """Sample this parameter only when each named earlier parameter has the value (or one of
    the values) given."""

    def holds(self, value: Any) -> bool:
        """Whether the parameter can take `value` (a range's bounds included)."""
        if hasattr(self, "choices"):
            return value in self.choices
        number = isinstance(value, int | float) and not isinstance(value, bool)
        whole = isinstance(value, int) or not isinstance(self.low, int)
        return number and whole and self.low <= value <= self.high

    def span(self) -> str:
        """Its values as a person writes them: `1e-05 .. 0.1`, `sgd, adam`."""
        if hasattr(self, "choices"):
            return ", ".join(map(str, self.choices))
        return f"{self.low:g} .. {self.high:g}"

    def active(self, values: dict[str, Any]) -> bool:
        """Whether the `when` conditions hold for the values sampled (or given) so far."""
        for name, wanted in (self.when or {}).items():
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if name not in values or values[name] not in allowed:
                return False
        return True


def _check_range(param: "FloatParam | IntParam") -> None:
    if param.low > param.high:
        raise ValueError(f"low ({param.low}) > high ({param.high}); make low <= high")
    if param.log and param.low <= 0:
        raise ValueError(f"log scale needs low > 0 (got {param.low}); raise low or set log: false")
    if param.log and param.step is not None and param.step != 1:
        raise ValueError("log and step cannot be combined; drop one of them")
    if param.step is not None and param.step <= 0:
        raise ValueError(f"step must be > 0 (got {param.step})")


class FloatParam(_Param):
    """A real number in [low, high], optionally on a log scale or a grid of `step`."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _valid(self) -> "FloatParam":
        _check_range(self)
        return self

    def suggest(self, trial: "optuna.Trial", name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def distribution(self) -> Any:
        """Optuna's distribution of this parameter (what `suggest` asks for)."""
        import optuna

        return optuna.distributions.FloatDistribution(
            self.low, self.high, log=self.log, step=self.step
        )


class IntParam(_Param):
    """An integer in [low, high], optionally on a log scale or a grid of `step`."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int | None = None

    @model_validator(mode="after")
    def _valid(self) -> "IntParam":
        _check_range(self)
        return self

    def suggest(self, trial: "optuna.Trial", name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step or 1)

    def distribution(self) -> Any:
        """Optuna's distribution of this parameter (what `suggest` asks for)."""
        import optuna

        return optuna.distributions.IntDistribution(
            self.low, self.high, log=self.log, step=self.step or 1
        )


class CategoricalParam(_Param):
    """One of a list of choices."""

    type: Literal["categorical"]
    choices: list[Choice]

    @model_validator(mode="after")
    def _valid(self) -> "CategoricalParam":
        if not self.choices:
            raise ValueError("choices is empty; list at least one value")
        return self

    def suggest(self, trial: "optuna.Trial", name: str) -> Choice:
        return trial.suggest_categorical(name, self.choices)

    def distribution(self) -> Any:
        """Optuna's distribution of this parameter (what `suggest` asks for)."""
        import optuna

        return optuna.distributions.CategoricalDistribution(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class Space(BaseModel):
    """Parameters in order; a `when:` condition names parameters listed before it, or values
    the caller passes as `context` (a fixed hyperparameter, the data set's modality, ...).

    Args:
        name: The space's name (the file name for the shipped spaces).
        description: What the space explores, in a sentence.
        params: Parameter name to its distribution.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "inline"
    description: str = ""
    params: dict[str, Param]

    @model_validator(mode="after")
    def _valid(self) -> "Space":
        if not self.params:
            raise ValueError("params is empty; list at least one parameter")
        seen: dict[str, Any] = {}
        for name, param in self.params.items():
            for other, wanted in (param.when or {}).items():
                if other not in seen and other in self.params:
                    raise ValueError(
                        f"params.{name}.when names {other!r}, which is not a parameter listed "
                        f"before {name!r}; list {other!r} first"
                    )
                choices = getattr(seen.get(other), "choices", None)
                for value in wanted if isinstance(wanted, list) else [wanted]:
                    if choices is not None and value not in choices:
                        raise ValueError(
                            f"params.{name}.when: {other}={value!r} is not among its choices "
                            f"{choices}; use one of them"
                        )
            seen[name] = param
        return self

    def suggest(
        self, trial: "optuna.Trial", context: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Sample every active parameter on `trial` (define-by-run) and return the values.

        `context` holds values that `when:` conditions may test but that are not sampled.
        """
        known = dict(context or {})
        values: dict[str, Any] = {}
        for name, param in self.params.items():
            if param.active(known):
                values[name] = known[name] = param.suggest(trial, name)
        return values
