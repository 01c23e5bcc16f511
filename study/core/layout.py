"""Where a study keeps everything: each path and URI computed once from the spec and the root.

By default all of it lives under one root folder: the MLflow store (mlflow.db, mlartifacts/),
the Optuna storage (optuna.db), Ray's experiment folders (ray/), each study's own folder
(studies/NAME: spec, results, report, driver lock) and exports (exports/NAME). A spec moves
the stores elsewhere with tracking.uri, search.storage and cluster.storage.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "state.pt"  # a trial's checkpoint: model, optimizer, epoch and RNG states
SPEC_FILE = "spec.yaml"
FOUND_FILE = "found.yaml"  # what preflight found: data source, shape, statistics, model file
LOCK_FILE = "driver.lock"  # in the study's folder, held by its driver
DRIVER_FILE = "driver.json"  # beside it: who holds it, for the messages
STAGE_FILE = "stage.json"  # beside them: the study's recorded state (study.core.stage)
ABLATION, CONFIRM = "ablation", "confirm"  # the MLflow roles (study.role) of their runs
REPEAT_ROLES = (ABLATION, CONFIRM)  # `study ablate`, `study confirm`: their MLflow roles


def store_uri(root: Path) -> str:
    """The default tracking URI: an SQLite file under the root folder."""
    return f"sqlite:///{mlflow_db(root)}"


def mlflow_db(root: Path) -> Path:
    """The default MLflow store's SQLite file."""
    return root / "mlflow.db"


def artifact_root(root: Path) -> Path:
    """Where a local MLflow store keeps the artifacts of every experiment."""
    return root / "mlartifacts"


def trial_dirname(trial_id: str) -> str:
    """A trial's folder in Ray's experiment folder (Ray's default spells out the config)."""
    return f"trial_{trial_id}"


@dataclass(frozen=True)
class Layout:
    """Every path and URI of study `name` under `root`."""

    root: Path
    name: str
    experiment: str  # the MLflow experiment's name
    tracking_uri: str
    optuna_url: str
    ray_storage: str  # Ray's storage_path: a folder or a URI

    @classmethod
    def of(cls, spec: Any, root: Path) -> "Layout":
        """The layout of a StudySpec under `root` (an absolute folder)."""
        return cls(
            root=root,
            name=spec.name,
            experiment=spec.tracking.experiment or spec.name,
            tracking_uri=spec.tracking.uri or store_uri(root),
            optuna_url=spec.search.storage or f"sqlite:///{root}/optuna.db",
            ray_storage=spec.cluster.storage or str(root / "ray"),
        )

    # -- the root's own files ------------------------------------------------------------------

    @property
    def root_lock(self) -> Path:
        """Held while a study claims its name and makes the root's stores."""
        return self.root / ".study.lock"

    @property
    def local_tracking(self) -> bool:
        """Whether MLflow records go to a file store here rather than to a server."""
        return self.tracking_uri.startswith(("sqlite:", "file:"))

    @property
    def artifacts(self) -> Path:
        """The experiment's artifact folder when the store is local."""
        return artifact_root(self.root) / self.experiment

    # -- the study's folder ----------------------------------------------------------------------

    @property
    def study_dir(self) -> Path:
        """The study's own folder: spec, results, report, driver lock."""
        return study_dir(self.root, self.name)

    @property
    def spec_file(self) -> Path:
        return self.study_dir / SPEC_FILE

    @property
    def found_file(self) -> Path:
        return self.study_dir / FOUND_FILE

    @property
    def results_json(self) -> Path:
        return self.study_dir / "results.json"

    @property
    def results_csv(self) -> Path:
        return self.study_dir / "results.csv"

    @property
    def report_dir(self) -> Path:
        return self.study_dir / "report"

    @property
    def ablation_csv(self) -> Path:
        """`study ablate`'s table: the change in the metric per regularizer removed."""
        return self.study_dir / "ablation.csv"

    @property
    def ablation_png(self) -> Path:
        """`study ablate`'s forest plot."""
        return self.study_dir / "ablation.png"

    @property
    def confirm_csv(self) -> Path:
        """`study confirm`'s table: the top trials' means over seeds."""
        return self.study_dir / "confirm.csv"

    @property
    def confirm_png(self) -> Path:
        """`study confirm`'s forest plot."""
        return self.study_dir / "confirm.png"

    @property
    def repeats_lock(self) -> Path:
        """Held by the `study ablate` or `study confirm` that runs (one at a time)."""
        return self.study_dir / "repeats.lock"

    @property
    def errors_file(self) -> Path:
        """Where the tracebacks of the engines' errors during a study go (one line each on
        the console names it)."""
        return self.study_dir / "errors.txt"

    @property
    def driver_lock(self) -> Path:
        return self.study_dir / LOCK_FILE

    @property
    def driver_record(self) -> Path:
        return self.study_dir / DRIVER_FILE

    @property
    def stage_record(self) -> Path:
        """The study's recorded state: its stage and its driver's counts (study.core.stage)."""
        return self.study_dir / STAGE_FILE

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports" / self.name

    # -- Ray's experiment folder ---------------------------------------------------------------

    @property
    def ray_experiment(self) -> Path:
        """Ray's folder of this study's trials (a local or shared folder)."""
        return Path(self.ray_storage) / self.name

    def repeats_experiment(self, role: str) -> str:
        """The name of Ray's experiment folder of `study ablate` or `study confirm` (`role`),
        beside the study's."""
        return f"{self.name}.{role}"

    @property
    def repeats_dirs(self) -> list[Path]:
        """Ray's experiment folders of `study ablate` and `study confirm`."""
        return [Path(self.ray_storage) / self.repeats_experiment(r) for r in REPEAT_ROLES]

    def trial_dir(self, trial_id: str) -> Path:
        """The folder of Ray trial `trial_id`: its checkpoints and error.txt."""
        return self.ray_experiment / trial_dirname(trial_id)

    def last_checkpoint(self, trial_id: str | None) -> Path | None:
        """The newest checkpoint file Ray kept of a trial (it keeps the last two), if any."""
        if not trial_id:
            return None
        states = self.trial_dir(trial_id).glob(f"checkpoint_*/{STATE_FILE}")
        return max(states, key=lambda path: path.parent.name, default=None)


def study_dir(root: Path, name: str) -> Path:
    """Where study `name` keeps its own files: <root>/studies/<name>."""
    return root / "studies" / name


def known_studies(root: Path) -> list[str]:
    """The names of the studies under `root`."""
    return sorted(path.parent.name for path in (root / "studies").glob(f"*/{SPEC_FILE}"))


def write_whole(path: Path, text: str) -> None:
    """Write `text` to `path` so that a reader at any moment sees the old file or the new one,
    never half of it: written beside it, then renamed over it."""
    aside = path.with_name(f".{path.name}.new")
    try:
        aside.write_text(text)
        aside.replace(path)
    finally:
        aside.unlink(missing_ok=True)
