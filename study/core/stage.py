"""A study's life as one recorded state: where it stands (its stage), what its driver last
counted (trials started and ended, epochs, the best so far) and, when an error stopped it,
the line that said why. Written whole beside driver.json at each step, so that a kill at any
moment leaves the last step's record; `study status` answers from it without opening a store,
and `standing` alone decides what the study's state means and what `study resume` does.

Stages, in order (a resume goes back to `stores made`):
    created: the name claimed and the spec saved; no store touched yet
    stores made: the MLflow experiment, the Optuna study and the parent run exist
    trials started: Ray Tune runs the trials
    trials ended: Tune returned; the results table and the parent run are being closed
    finished: every trial it asked for ended, the results written (or, with search.terminate,
        every trial it asked before its rule stopped it: `terminated` says after how many)
    ended short: Tune returned with fewer trials ended than it asked for (resume finishes it)
"""

import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from study.core.layout import write_whole
from study.core.outcome import Outcome, scored


class Stage(str, Enum):
    """Where a study stands; its value is the word the record and the console use."""

    CREATED = "created"
    STORES_MADE = "stores made"
    TRIALS_STARTED = "trials started"
    TRIALS_ENDED = "trials ended"
    FINISHED = "finished"
    ENDED_SHORT = "ended short"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StudyState:
    """The record of a study's life (see the module's docstring)."""

    stage: Stage
    wanted: int  # search.num_samples
    started: int = 0  # trials started, by any driver
    outcomes: dict[str, int] = field(default_factory=dict)  # trials ended, by outcome
    epochs: int = 0  # epochs trained, every trial's
    best: tuple[str, float] | None = None  # the best trial's run name and metric value
    stopped: str = ""  # the one line an error stopped the driver with ("" while none did)
    interrupted: bool = False  # stopped by Ctrl-C
    terminated: str = ""  # search.terminate's stop: "no gain expected after K of N trials"
    updated: float = 0.0  # when written (seconds since the epoch)

    @property
    def ended(self) -> int:
        """Trials ended, whatever their outcome."""
        return sum(self.outcomes.values())

    @property
    def running(self) -> int:
        """Trials started and not ended (unfinished, once their driver is gone)."""
        return max(self.started - self.ended, 0)

    def at(self, stage: Stage) -> "StudyState":
        """This state moved to `stage`: a new step, so no error stopped it (yet)."""
        return replace(self, stage=Stage(stage), stopped="", interrupted=False)

    def as_json(self) -> str:
        raw = asdict(self)
        raw["stage"] = self.stage.value
        best = self.best
        raw["best"] = {"trial": best[0], "value": best[1]} if best else None
        return json.dumps(raw, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "StudyState":
        raw = json.loads(text)
        best = raw.get("best")
        raw["best"] = (best["trial"], float(best["value"])) if best else None
        raw["stage"] = Stage(raw["stage"])
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


def save(path: Path, state: StudyState) -> None:
    """Write the state whole (a reader sees the last step's record or this one)."""
    write_whole(path, replace(state, updated=time.time()).as_json())


def load(path: Path) -> StudyState | None:
    """The recorded state, None for a study that has none (made before it was recorded)."""
    try:
        return StudyState.from_json(path.read_text())
    except FileNotFoundError:
        return None


def stopped(path: Path, line: str, interrupted: bool = False) -> None:
    """Record that the study's driver stopped with `line` (an error's, or Ctrl-C's), where a
    state is recorded and the disk still takes it (a full disk is said on the console)."""
    with contextlib.suppress(OSError):
        state = load(path)
        if state is not None:
            save(path, replace(state, stopped=line, interrupted=interrupted))


@dataclass(frozen=True)
class Standing:
    """What a study's state means: one word, the line that says it, and what `study resume`
    does with it (`restore`: Tune's saved run, when Tune saved one; `afresh`: a new Tune run
    over the same records; `nothing`: the study is whole, or its driver runs)."""

    word: str
    line: str
    resume: str


def standing(name: str, state: StudyState, driven: bool, driver: str = "") -> Standing:
    """Decide where study `name` stands from its recorded `state` and whether a live driver
    holds it (`driver`: who last drove it, for the line)."""
    counted = f"{state.started} of {state.wanted} trials started"
    again = f"continue it with `study resume {name}`"
    if driven:
        return Standing("running", f"{name}: running, {counted}", "nothing")
    mid_tune = state.stage == Stage.TRIALS_STARTED  # Tune may have saved a run to restore
    how = "restore" if mid_tune else "afresh"
    if state.stopped:
        word = "killed" if state.interrupted else "failed"
        return Standing(word, f"{name}: {word}, {counted}; {state.stopped}; {again}", how)
    if state.stage == Stage.FINISHED and state.terminated:
        return Standing("stopped", f"{name}: stopped: {state.terminated}", "nothing")
    if state.stage == Stage.FINISHED and state.ended >= state.wanted:
        return Standing("finished", f"{name}: finished, {counted}", "nothing")
    if state.stage in (Stage.FINISHED, Stage.ENDED_SHORT):
        short = f"ended short: {state.ended} of {state.wanted} trials"
        return Standing("ended short", f"{name}: {short}; resume it: `study resume {name}`", how)
    gone = f"its driver ({driver or 'driver unknown'}) is gone"
    return Standing("interrupted", f"{name}: interrupted, {counted}; {gone}; {again}", how)


def counted(state: StudyState, records: Iterable[Any], metric: str, mode: str) -> StudyState:
    """`state` with the counts of a study's trials (study.core.record.TrialRecord, or the
    tracker's running trials, which have the same `outcome`, `epochs`, `name` and `metrics`):
    trials started, ended by outcome, epochs spent and the best trial by `metric`."""
    outcomes: dict[str, int] = {}
    best: tuple[str, float] | None = None
    started = epochs = 0
    for record in records:
        started, epochs = started + 1, epochs + record.epochs
        if record.outcome != Outcome.RUNNING:
            word = str(record.outcome)
            outcomes[word] = outcomes.get(word, 0) + 1
        value = record.metrics.get(metric)
        if scored(record.outcome, value) and (
            best is None or (value > best[1] if mode == "max" else value < best[1])
        ):
            best = (record.name, value)
    return replace(state, started=started, outcomes=outcomes, epochs=epochs, best=best)
