"""The package's layout: no import circle, each stage imports only the stages below it, and the names users
import (eomt.__all__, the README's imports, `python -m eomt`) keep working."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "eomt"
README = SRC.parent / "README.md"

# stage -> stages it must never import (a stage is a subpackage or a top-level module of eomt)
FORBIDDEN = {
    "outputs": {"config", "config_checks", "modeling", "processing", "checkpoints", "runtimes", "predictor", "data",
                "evaluation", "training", "jobs", "cli"},
    "modeling": {"processing", "runtimes", "predictor", "data", "evaluation", "training", "jobs", "cli"},
    "checkpoints": {"processing", "runtimes", "predictor", "data", "evaluation", "training", "jobs", "cli"},
    "processing": {"modeling", "runtimes", "predictor", "data", "evaluation", "training", "jobs", "cli"},
    "runtimes": {"predictor", "data", "evaluation", "training", "jobs", "cli"},
    "data": {"modeling", "checkpoints", "runtimes", "evaluation", "training", "jobs", "cli"},
    "jobs": {"evaluation", "training", "cli"},
    "evaluation": {"training", "cli"},
    "training": {"cli"},
    "predictor": {"evaluation", "training", "jobs", "cli"},
    "config": {"modeling", "processing", "runtimes", "predictor", "data", "evaluation", "training", "jobs", "cli"},
    "serve": {"data", "evaluation", "training", "jobs", "cli"},
    "video": {"cli", "jobs", "training", "evaluation", "data", "runtimes", "predictor"},
}
# stages only the command line may import (their dependencies are optional extras)
ONLY_FOR_CLI = {"serve"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every eomt module `path` imports anywhere in its text: at the top, inside functions, under
    TYPE_CHECKING. `from X import y` counts X.y when that is a module, else X."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names} & modules.keys()
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined by the module itself
                found.add(target)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_graph_finds_a_circle():
    """The check itself: a circle through a lazy import is reported."""
    graph = {"eomt.a": {"eomt.b"}, "eomt.b": {"eomt.c"}, "eomt.c": {"eomt.a"}, "eomt.d": set()}
    assert find_circle(graph) == ["eomt.a", "eomt.b", "eomt.c", "eomt.a"]
    assert find_circle({"eomt.a": {"eomt.b"}, "eomt.b": set()}) is None


def test_no_import_circle():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_each_stage_imports_only_the_stages_below_it():
    wrong = [f"{src} imports {dst}" for src, targets in import_graph().items() for dst in sorted(targets)
             if stage(dst) in FORBIDDEN.get(stage(src), set())]
    assert not wrong, "\n".join(wrong)


def test_only_the_command_line_imports_the_optional_stages():
    wrong = [f"{src} imports {dst}" for src, targets in import_graph().items() for dst in sorted(targets)
             if stage(dst) in ONLY_FOR_CLI and stage(src) not in (stage(dst), "cli")]
    assert not wrong, "\n".join(wrong)


def test_no_loose_modules_beyond_the_public_faces():
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "config.py", "config_checks.py", "predictor.py"]


def test_every_module_imports_in_a_fresh_interpreter_highest_first():
    """Importing each module before what it depends on would expose a circle of eager imports."""
    graph = import_graph()
    order: list[str] = []
    seen: set[str] = set()

    def place(node: str) -> None:
        if node not in seen:
            seen.add(node)
            for dep in sorted(graph[node]):
                place(dep)
            order.append(node)

    for node in sorted(graph):
        place(node)
    highest_first = [m for m in reversed(order) if m != "eomt.__main__"]
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\nprint('ok')"
    run = subprocess.run([sys.executable, "-c", code, *highest_first], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def readme_imports() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return sorted({line for line in lines if re.match(r"(from eomt[\w.]* import |import eomt)", line)})


def test_the_names_users_import_keep_working():
    import eomt

    assert readme_imports(), "the README shows no import of eomt"
    for line in readme_imports():
        exec(line, {})
    for name in eomt.__all__:
        assert getattr(eomt, name) is not None
    from eomt.checkpoints import build_from_backbone  # noqa: F401
    from eomt.predictor import Segmenter  # noqa: F401


@pytest.mark.parametrize("command", [["-m", "eomt"], ["-c", "from eomt.cli import main; main()"]])
def test_the_command_starts_from_both_entry_points(command):
    run = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "predict" in run.stdout and "export" in run.stdout
