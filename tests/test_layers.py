"""Who may import whom (the README's Layout section): no import cycle among our modules; the
packages of study/ by role (core imports only core; evidence only core; engines never commands
nor evidence; commands never the CLI), a core that loads no engine, commands that read records
without Ray, and plain-PyTorch trainables."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "trainables", "search_spaces")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The project modules `path` imports anywhere in it (functions included)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path.parent / "x")
    package = package.rpartition(".")[0] if path.name != "__init__.py" else package
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {name: imports(path) & set(modules) for name, path in modules.items()}


def test_no_import_cycle():
    """No module imports, at any depth and from any function, a module that imports it."""
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges[node]):
            if target == node or (node.startswith(target + ".") and target in edges):
                continue  # a package's own submodule, or a module and its package
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_core_and_interface_import_nothing_of_ours_beyond_themselves():
    """study.core imports only study.core and the loop's torch-free table of hyperparameters
    and run settings (the facts the loop and the core share, written there once: trainables
    imports no study); trainables.interface imports nothing of ours."""
    edges = graph()
    shared = {"trainables", "trainables.hyperparameters"}
    for name, targets in edges.items():
        if name.startswith("study.core"):
            outside = {t for t in targets if not t.startswith("study.core")} - shared
            assert not outside, f"{name} imports {outside}"
    assert edges["trainables.interface"] == set()


# study's packages by role, and the study modules each may import beyond its own package
# (spec is the user's file validated: every role reads it; the core does not).
MAY_IMPORT = {
    "study.core": (),
    "study.evidence": ("study.core",),
    "study.engines": ("study.core", "study.spec", "study"),
    "study.commands": ("study.core", "study.engines", "study.evidence", "study.spec", "study"),
    "study.spec": ("study.core",),
    "study.cli": ("study.core", "study.commands", "study.spec", "study.engines"),
}


def role(module: str) -> str | None:
    """The role of a study module: its package under study/, or a top-level module's own name."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "study" and len(parts) > 1 else None


def test_each_role_imports_only_what_it_may():
    """core imports no other study package; evidence only core; engines never commands,
    evidence or the CLI; commands never the CLI. Nothing imports upwards."""
    edges = graph()
    roles = {role(name) for name in edges} - {None}
    assert {"study.core", "study.engines", "study.commands", "study.evidence"} <= roles
    for name, targets in edges.items():
        mine = role(name)
        if mine is None or mine not in MAY_IMPORT and mine != "study.__main__":
            continue
        allowed = (mine, *MAY_IMPORT.get(mine, ("study.cli",)))
        wrong = {t for t in targets if t.startswith("study") and role(t) not in allowed}
        wrong -= {"study"}  # the package itself (its __init__ sets Ray's environment)
        assert not wrong, f"{name} may not import {sorted(wrong)}"


def test_study_keeps_at_most_four_top_level_modules():
    """The folders show the architecture: beside the role packages, at most four modules."""
    top = sorted(path.name for path in (ROOT / "study").glob("*.py"))
    assert len(top) <= 4, top


def test_trainables_never_import_the_engines_or_study():
    """trainables is plain PyTorch: no Ray, MLflow, Optuna or study code."""
    for path in (ROOT / "trainables").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        roots = {name.split(".")[0] for name in names}
        assert not roots & {"ray", "mlflow", "optuna", "study"}, f"{path.name}: {roots}"


def loaded(*modules: str) -> set[str]:
    """The top-level packages importing `modules` loads, in a fresh interpreter."""
    code = f"import sys; import {', '.join(modules)}; print(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return {name.split(".")[0] for name in done.stdout.split()}


def test_core_loads_no_engine():
    """The core is importable without Ray, Optuna, MLflow, torch or numpy."""
    assert not loaded("study.core") & {"ray", "optuna", "mlflow", "torch", "numpy"}


def test_reading_commands_load_no_ray_or_torch():
    """status, report, export and train read records: no Ray; status and export no torch."""
    assert "ray" not in loaded(
        "study.commands.status",
        "study.commands.report",
        "study.commands.export",
        "study.commands.train",
    )
    assert not loaded("study.cli", "study.commands.status", "study.commands.export") & {
        "ray",
        "torch",
        "optuna",
    }


def test_ablate_and_confirm_check_their_input_before_loading_ray():
    """`study ablate` and `study confirm` refuse bad input before Ray is imported (it is
    imported once the input is checked, to train)."""
    assert "ray" not in loaded("study.commands.ablate", "study.commands.confirm")


def test_status_reads_the_recorded_state_without_mlflow():
    """`study status` answers from the study's own recorded state: MLflow (about 2 s of
    imports) is loaded only for a study recorded before its state was."""
    assert "mlflow" not in loaded("study.cli", "study.commands.status", "study.commands.preflight")
