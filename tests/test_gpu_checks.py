"""benchmarks/gpu_checks.sh --dry-run: the GPU report script runs end to end on CPU, also with only
torch, transformers and their dependencies importable (as on the GPU machines lent to this project)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_checks  # noqa: E402  (benchmarks/ is no package)

# what the GPU machines lack: a sitecustomize that makes these packages unfindable, as if not installed
HIDDEN = ["pycocotools", "lightning_fabric", "lightning", "onnxruntime", "onnx", "onnxscript", "scipy", "pytest",
          "torchvision", "matplotlib"]
HIDER = f'''
import sys
from importlib.machinery import PathFinder

HIDDEN = {set(HIDDEN)!r}


class _HidingPathFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] in HIDDEN else PathFinder.find_spec(name, path, target)

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        return PathFinder.find_distributions(*args, **kwargs)

    @classmethod
    def invalidate_caches(cls):
        PathFinder.invalidate_caches()


sys.meta_path[:] = [_HidingPathFinder if finder is PathFinder else finder for finder in sys.meta_path]
'''


def _run(out: Path, *args: str, pythonpath: list[Path] = ()) -> dict:
    env = {**os.environ, "PYTHON": sys.executable}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_checks.sh"), "--dry-run", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "gpu_report.md").is_file()
    report = json.loads((out / "gpu_report.json").read_text())
    markdown = (out / "gpu_report.md").read_text()
    for section in report["sections"]:
        assert f"## {section['title']}" in markdown and f"status: {section['status']}" in markdown
    return {s["key"]: s for s in report["sections"]}


def _column(section: dict, name: str, table: int = 0) -> list:
    columns = section["tables"][table]["columns"]
    return [row[columns.index(name)] for row in section["tables"][table]["rows"]]


def test_dry_run_writes_every_section_with_results(tmp_path):
    sections = _run(tmp_path / "report")
    assert list(sections) == gpu_checks.SECTIONS
    for key, section in sections.items():
        assert not section["status"].startswith(("failed", "skipped")), (key, section["status"])
        assert section["tables"] and all(t["rows"] for t in section["tables"]), key
    runtimes = _column(sections["fps"], "runtime")
    assert {"eomt eager", "eomt compiled", "eomt max-autotune", "transformers eager"} <= set(runtimes)
    assert all(isinstance(v, float) and v > 0 for v in _column(sections["fps"], "FPS"))
    checks = dict(sections["correctness"]["tables"][0]["rows"])
    assert any(r.startswith("ok: max abs diff") for r in checks.values())
    assert any("skipped" in r for k, r in checks.items() if k.startswith("pytest -m cuda"))  # no GPU here
    assert "eomt predict --dtype bfloat16" in _column(sections["e2e"], "runner")
    assert _column(sections["training"], "library") == ["eomt", "transformers"]
    assert re.search(r"same segment map on \d", _column(sections["large"], "vs transformers")[0])


def test_without_pycocotools_fabric_onnxruntime_scipy_pytest_the_other_sections_still_report(tmp_path):
    hider = tmp_path / "hide"
    hider.mkdir()
    (hider / "sitecustomize.py").write_text(HIDER)
    sections = _run(tmp_path / "report", "--sections", "env,correctness,fps,e2e,training,large", pythonpath=[hider])
    assert sections["env"]["status"] == "ok"
    assert "onnxruntime not installed" in _column(sections["env"], "taken here", table=2)
    checks = dict(sections["correctness"]["tables"][0]["rows"])
    assert checks["pytest -m cuda"] == "skipped: needs pytest"
    assert any(r.startswith("ok: max abs diff") for r in checks.values())
    assert "transformers eager" in _column(sections["fps"], "runtime")  # transformers' EoMT builds without scipy
    assert all(isinstance(v, float) and v > 0 for v in _column(sections["fps"], "FPS"))
    assert sections["e2e"]["status"].startswith("skipped: needs pycocotools, scipy")
    assert sections["training"]["status"].startswith("skipped: needs scipy")
    assert sections["large"]["status"] == "ok" and len(sections["large"]["tables"][0]["rows"]) == 2


def test_the_cuda_test_files_it_runs_are_all_those_with_cuda_tests():
    marked = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")
                    if re.search(r"^(@pytest\.mark\.cuda|pytestmark = pytest\.mark\.cuda)", p.read_text(), re.M))
    assert sorted(gpu_checks.CUDA_TEST_FILES) == marked
