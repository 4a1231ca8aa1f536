"""GPU checks in one command: environment, CUDA correctness, the FPS table, end to end, training, large images.

    bash benchmarks/gpu_checks.sh [OUT_DIR] [--dry-run] [--budget SECONDS] [--sections env,fps,...]

Writes OUT_DIR/gpu_report.md and OUT_DIR/gpu_report.json (default ./gpu_report/) after every section, so
that a run stopped half-way still leaves the sections it finished, and prints the report at the end.
It needs torch and transformers only (numpy, pillow, safetensors, huggingface_hub come with them);
a section that needs more (pytest, scipy, pycocotools) says "skipped: needs X" and the others run.

Sections (each guarded: a failure is one line in the report, and the next section runs):

1. environment: GPU, memory, driver, torch / CUDA / cuDNN versions, the SDPA backends that run the
   attention of eomt's eval forward, and which of eomt's CUDA paths are taken.
2. correctness: the tests marked `cuda` (`pytest -m cuda`, CUDA_TEST_FILES) and, in this process,
   eomt vs transformers logits on the device (float32) and panoptic agreement in bfloat16.
3. fps: forward FPS of ViT-S/B/L/g at 640 (and L at 1280), batch 1 and 8, float32 / bfloat16, eager and
   `torch.compile` (default, and max-autotune with CUDA graphs), next to transformers on the same weights.
   Rows run in priority order (the paper's ViT-L 640 row first) in worker processes, each job under its
   own time cap; a job that runs out of time is killed, what it measured is kept, an unfinished compile
   reads "compile > N s" and rows not reached are listed as dropped.
4. e2e: `eomt predict` on a folder of photos (ViT-L 640 panoptic, bfloat16, eager and compiled, decode
   workers on) vs the transformers pipeline, fresh processes, and their pixel agreement.
5. training: 20 steps of ViT-L 640 panoptic, batch 4, bfloat16 autocast (what Fabric's bf16-mixed runs)
   on synthetic targets: images/s and peak GPU memory, eomt vs transformers (benchmarks/train_speed.py).
6. large: peak `torch.cuda.max_memory_allocated` and time of panoptic post-processing of a 12 MP image
   with 200 queries, eomt vs transformers.

The whole run stays within --budget seconds (default 450): each section gets its share of what is left.
`--dry-run` runs every section on CPU with a tiny model and tiny sizes (compiles with backend "eager",
so that no C++ compiler is needed); tests/test_gpu_checks.py runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
# the test files holding tests marked `cuda` (tests/test_gpu_checks.py keeps this list complete)
CUDA_TEST_FILES = ["tests/modeling/test_cuda.py", "tests/processing/test_image_processor.py",
                   "tests/processing/test_postprocess.py", "tests/runtimes/test_backends.py"]
SECTIONS = ["env", "correctness", "fps", "e2e", "training", "large"]
TITLES = {"env": "1. Environment", "correctness": "2. Correctness on CUDA", "fps": "3. Forward FPS (the paper's table)",
          "e2e": "4. End to end: eomt predict vs the transformers pipeline",
          "training": "5. Training steps", "large": "6. Large images: panoptic post-processing"}
QUERIES, LABELS = 200, 133
# the dry run's training step: train_speed.py's worker on a model smaller than its "tiny"
DRY_TRAIN = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, num_queries=8,
                 image_size=64, num_labels=5, train_num_points=256, batch=2)


# ----------------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class FpsJob:
    """Rows measured by one worker process under one time cap; `modes` beyond eager are compiled variants."""

    rows: list[tuple[str, int, int, str]]  # (model size, image size, batch, dtype)
    modes: list[str]
    cap_s: float


@dataclass(frozen=True)
class Plan:
    device: str
    budget_s: float
    section_s: dict[str, float]
    fps_jobs: list[FpsJob]
    fps_runs: int
    fps_warmup: int
    compile_backend: str  # "inductor"; "eager" in the dry run
    parity_model: tuple[str, int]
    e2e_model: tuple[str, int]
    e2e_photos: int
    e2e_batch: int
    e2e_workers: int
    e2e_compile: bool
    train_config: str  # a key of train_speed.CONFIGS, or "dry" (DRY_TRAIN)
    train_steps: int
    large_image: tuple[int, int]
    large_queries: int
    large_logits: tuple[int, int]
    pytest_cap_s: float


def gpu_plan(budget_s: float) -> Plan:
    """What an H100 / H200 runs in about 7.5 minutes: the headline row compiled first, then the eager grid."""
    headline = ("L", 640, 1, "bfloat16")
    models = [("L", 640), ("S", 640), ("B", 640), ("g", 640), ("L", 1280)]
    grid = [(m, s, b, d) for d in ("bfloat16", "float32") for b in (1, 8) for m, s in models]  # most wanted first
    grid.remove(headline)
    jobs = [FpsJob([headline], ["eager", "compiled", "autotuned"], 120),
            FpsJob(grid, ["eager"], 90),
            FpsJob([("L", 640, 8, "bfloat16")], ["eager", "compiled", "autotuned"], 90),
            FpsJob([("L", 1280, 1, "bfloat16"), ("S", 640, 1, "bfloat16"), ("B", 640, 1, "bfloat16"),
                    ("g", 640, 1, "bfloat16")], ["eager", "compiled"], 90)]
    scale = budget_s / 450
    sections = {"env": 15, "correctness": 90, "fps": 170, "e2e": 100, "training": 45, "large": 20}
    return Plan(device="cuda", budget_s=budget_s, section_s={k: v * scale for k, v in sections.items()},
                fps_jobs=jobs, fps_runs=20, fps_warmup=3, compile_backend="inductor", parity_model=("S", 640),
                e2e_model=("L", 640), e2e_photos=64, e2e_batch=8, e2e_workers=4, e2e_compile=True,
                train_config="L", train_steps=20, large_image=(3000, 4000), large_queries=QUERIES,
                large_logits=(160, 160), pytest_cap_s=60 * scale)


def dry_plan(budget_s: float) -> Plan:
    """The same sections on CPU with the tiny model "T": a check that the script runs, not a measurement."""
    jobs = [FpsJob([("T", 64, 1, "bfloat16"), ("T", 96, 2, "float32")], ["eager", "compiled", "autotuned"], 60)]
    sections = {"env": 30, "correctness": 60, "fps": 60, "e2e": 60, "training": 60, "large": 30}
    return Plan(device="cpu", budget_s=budget_s, section_s=sections, fps_jobs=jobs, fps_runs=2, fps_warmup=1,
                compile_backend="eager", parity_model=("T", 64), e2e_model=("T", 64), e2e_photos=3, e2e_batch=2,
                e2e_workers=1, e2e_compile=False, train_config="dry", train_steps=2, large_image=(300, 400),
                large_queries=20, large_logits=(16, 16), pytest_cap_s=50)


# ----------------------------------------------------------------------------------------------- report


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value).replace("|", "/")


@dataclass
class Section:
    key: str
    status: str = "ok"  # ok, failed: ..., skipped: ..., partial: ...
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"## {TITLES[self.key]}", "", f"status: {self.status} ({self.seconds:.0f} s)"]
        parts += [""] + self.notes if self.notes else []
        for table in self.tables:
            parts += ["", table.markdown()]
        return "\n".join(parts)


class Report:
    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta, self.sections = out, meta, []

    def add(self, section: Section) -> None:
        self.sections.append(section)
        self.write()

    def markdown(self) -> str:
        head = ["# eomt GPU checks", "", *(f"- {k}: {v}" for k, v in self.meta.items())]
        return "\n".join(head + ["", *(s.markdown() + "\n" for s in self.sections)])

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"meta": self.meta, "sections": [asdict(s) | {"title": TITLES[s.key]} for s in self.sections]}
        _write_atomic(self.out / "gpu_report.json", json.dumps(data, indent=2, default=str) + "\n")
        _write_atomic(self.out / "gpu_report.md", self.markdown())


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


class Clock:
    """The run's deadline; a section gets its own share, less what the sections after it need at least."""

    def __init__(self, budget_s: float) -> None:
        self.deadline = time.monotonic() + budget_s

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def share(self, wanted: float, later_sections: int) -> float:
        return max(0.0, min(wanted, self.left() - 10.0 * later_sections))


# ----------------------------------------------------------------------------------------------- helpers


def missing(*modules: str) -> list[str]:
    """The modules of `modules` that cannot be imported here (without importing them)."""
    gone = []
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                gone.append(name)
        except (ImportError, ValueError):
            gone.append(name)
    return gone


def run_capped(cmd: list[str], limit_s: float, env: dict[str, str] | None = None) -> tuple[int | None, str, str]:
    """Run `cmd` (from the repository root) for at most `limit_s`; (exit code or None if killed, stdout, stderr).

    It runs in its own process group, so that a compile's worker processes go with it when it is killed.
    """
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=max(1.0, limit_s))
        return process.returncode, out, err
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        return None, out, err


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def child_env() -> dict[str, str]:
    """The environment of worker processes: this checkout's src/ first, no progress bars, no network."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(BENCHMARKS), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return env


def cpu_model() -> str:
    import torch
    from forward_speed import device_name

    return device_name(torch.device("cpu"))


def allow_transformers_eomt_without_scipy() -> bool:
    """Let transformers' EoMT model be built where scipy is missing (as on the GPU machines lent so far).

    Its constructor builds the training loss, whose `requires_backends(["scipy"])` refuses; inference never
    uses the loss (scipy does the loss's Hungarian matching). The check is skipped in transformers' module,
    nothing else changes. Returns whether it had to.
    """
    if not missing("scipy"):
        return False
    from transformers.models.eomt import modeling_eomt

    modeling_eomt.requires_backends = lambda *args, **kwargs: None
    return True


def model_sizes() -> dict[str, tuple[int, int, int, int]]:
    from fps import SIZES

    return SIZES


def reference_pair(size: str, image: int, device: str):
    """(transformers model, eomt model) with the same seeded random weights, float32, on `device`, in eval mode.

    The eomt model takes transformers' state dict (the same keys); `attn_mask_probs` are zero (a finished model).
    """
    import torch
    import transformers

    from eomt import EomtConfig, EomtForUniversalSegmentation

    hidden, layers, heads, blocks = model_sizes()[size]
    config = transformers.EomtConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                     num_blocks=blocks, num_queries=QUERIES if size != "T" else 20,
                                     num_labels=LABELS, image_size=image, use_swiglu_ffn=size == "g")
    torch.manual_seed(0)
    with torch.device(device):
        theirs = transformers.EomtForUniversalSegmentation(config).eval()
    with torch.no_grad():
        theirs.attn_mask_probs.zero_()
    with tempfile.TemporaryDirectory() as tmp:
        theirs.config.save_pretrained(tmp)
        ours_config = EomtConfig.from_pretrained(tmp)
    with torch.device(device):
        ours = EomtForUniversalSegmentation(ours_config)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours.eval()


# ----------------------------------------------------------------------------------------------- 1. environment


def section_env(plan: Plan, section: Section, limit_s: float) -> None:
    import torch

    device = torch.device(plan.device)
    facts = Table(["what", "value"])
    facts.rows += [["python", platform.python_version()], ["torch", torch.__version__],
                   ["CUDA (torch built with)", torch.version.cuda], ["CPU", f"{cpu_model()}, {os.cpu_count()} cores"]]
    with contextlib.suppress(Exception):
        import transformers

        facts.rows.append(["transformers", transformers.__version__])
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts.rows += [["GPU", f"{props.name} (compute capability {props.major}.{props.minor})"],
                       ["GPU memory", f"{props.total_memory / 2**30:.1f} GiB"],
                       ["GPUs visible", torch.cuda.device_count()],
                       ["cuDNN", torch.backends.cudnn.version()],
                       ["TF32 matmul / cuDNN", f"{torch.backends.cuda.matmul.allow_tf32} / "
                                               f"{torch.backends.cudnn.allow_tf32}"]]
        code, out, _ = run_capped(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], 10) \
            if shutil.which("nvidia-smi") else (None, "", "")
        facts.rows.append(["driver", out.strip().splitlines()[0] if code == 0 and out.strip() else "nvidia-smi: n/a"])
    else:
        facts.rows.append(["GPU", "none: dry run on CPU"])
    section.tables.append(facts)
    section.tables.append(_sdpa_table(device))
    section.tables.append(_cuda_paths(device))


def _tiny_model(device, hidden: int = 128, heads: int = 2, image: int = 64):
    """An eomt model with head dim 64 (what flash attention takes), finished (no masked attention)."""
    import torch

    from eomt import EomtConfig, EomtForUniversalSegmentation

    torch.manual_seed(0)
    config = EomtConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=heads, num_blocks=1,
                        num_queries=10, image_size=image, num_labels=5)
    with torch.device(device):
        model = EomtForUniversalSegmentation(config).eval()
    model.attn_mask_probs.zero_()
    return model


def _sdpa_table(device) -> Table:
    """Each SDPA backend alone: does a bare attention call run, and does eomt's eval forward run on it?"""
    import torch
    import torch.nn.functional as F

    table = Table(["SDPA backend", "enabled flag", "runs bare attention (1805 tokens, head dim 64)",
                   "runs eomt's eval forward"])
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        table.rows.append(["(torch.nn.attention.sdpa_kernel missing in this torch)", "-", "-", "-"])
        return table
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = _tiny_model(device).to(dtype)
    pixels = torch.randn(1, 3, 64, 64, device=device, dtype=dtype)
    q = torch.randn(1, 16, 1805, 64, device=device, dtype=dtype)
    flags = {"FLASH_ATTENTION": "flash_sdp_enabled", "EFFICIENT_ATTENTION": "mem_efficient_sdp_enabled",
             "CUDNN_ATTENTION": "cudnn_sdp_enabled", "MATH": "math_sdp_enabled"}
    for name, flag in flags.items():
        backend = getattr(SDPBackend, name, None)
        enabled = getattr(torch.backends.cuda, flag, None)
        enabled = enabled() if callable(enabled) else "-"
        if backend is None:
            table.rows.append([name.lower(), enabled, "not in this torch", "-"])
            continue
        results = []
        for call in (lambda: F.scaled_dot_product_attention(q, q, q), lambda: model(pixels)):
            try:
                with sdpa_kernel([backend]), torch.inference_mode():
                    call()
                sync(str(device))
                results.append("yes")
            except Exception as exc:  # a backend that does not apply raises RuntimeError with its reasons
                results.append("no: " + last_line(str(exc))[:80])
        table.rows.append([name.lower(), enabled, *results])
    return table


def _cuda_paths(device) -> Table:
    """Which of eomt's device-dependent paths this device takes, each observed, not assumed."""
    import torch

    from eomt.predictor import Segmenter
    from eomt.processing import postprocess
    from eomt.processing.image_processor import EomtImageProcessor

    table = Table(["eomt path", "taken here", "how it was seen"])
    model = _tiny_model(device, hidden=64)
    processor = EomtImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True)

    def row(name: str, how: str, check) -> None:
        try:
            table.rows.append([name, check(), how])
        except Exception as exc:
            table.rows.append([name, f"error: {last_line(str(exc))}", how])

    def no_sync() -> str:
        if device.type != "cuda":
            return "n/a (cpu)"
        with torch.inference_mode():
            model(torch.randn(1, 3, 64, 64, device=device))  # reads the mask probabilities once
            torch.cuda.set_sync_debug_mode("error")
            try:
                model(torch.randn(1, 3, 64, 64, device=device))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return "yes"

    def preprocess() -> str:
        from PIL import Image

        pixels = processor(Image.open(ROOT / "examples" / "coffee.png").convert("RGB"), device=device).pixel_values
        return f"yes ({pixels.device})" if pixels.device.type == device.type else f"no ({pixels.device})"

    def post() -> str:
        logits = torch.randn(1, 10, 16, 16, device=device)
        result = postprocess.panoptic_segmentation(logits, torch.randn(1, 10, 6, device=device), [(64, 64)],
                                                   processor.size)
        banded = postprocess._band_rows(logits[0]) < logits.shape[2]
        return f"{result[0]['segmentation'].device}; {'banded rows (CPU path)' if banded else 'whole masks'}"

    def heads() -> str:
        segmenter = Segmenter(model.to(torch.bfloat16).float32_heads(), processor)
        backbone = segmenter.model.layers[0].mlp.fc1.weight.dtype
        head = segmenter.model.mask_head.fc3.weight.dtype
        return f"backbone {str(backbone).removeprefix('torch.')}, heads {str(head).removeprefix('torch.')}"

    def compile_mode() -> str:
        seen = {}
        real = torch.compile

        def record(module, **kwargs):
            seen.update(kwargs)
            return module

        torch.compile = record
        try:
            Segmenter(_tiny_model(device, hidden=64), processor, compile=True)
        finally:
            torch.compile = real
        return f"mode={seen.get('mode')}, dynamic={seen.get('dynamic')}"

    def onnx_providers() -> str:
        if missing("onnxruntime"):
            return "onnxruntime not installed"
        import onnxruntime

        from eomt.runtimes.onnx_runtime import providers_for

        return ", ".join(providers_for(device, onnxruntime.get_available_providers()))

    row("eval forward without a host sync", "a second forward under torch.cuda.set_sync_debug_mode('error')", no_sync)
    row("pre-processing on the device", "EomtImageProcessor(image, device=...).pixel_values.device", preprocess)
    row("post-processing on the device", "panoptic_segmentation on device logits; postprocess._band_rows", post)
    row("bfloat16 backbone, float32 heads", "Segmenter over model.to(bfloat16).float32_heads()", heads)
    row("Segmenter(compile=True)", "the arguments it passes to torch.compile (recorded, not compiled)", compile_mode)
    row("onnxruntime execution providers", "providers_for(device, onnxruntime.get_available_providers())",
        onnx_providers)
    return table


# ----------------------------------------------------------------------------------------------- 2. correctness


def section_correctness(plan: Plan, section: Section, limit_s: float) -> None:
    started = time.monotonic()
    tests = Table(["check", "result"])
    section.tables.append(tests)
    if missing("pytest"):
        tests.rows.append(["pytest -m cuda", "skipped: needs pytest"])
        section.status = "partial: the cuda tests need pytest"
    else:
        tests.rows.append(["pytest -m cuda " + " ".join(CUDA_TEST_FILES),
                           _run_cuda_tests(min(plan.pytest_cap_s, limit_s - 20))])
    left = limit_s - (time.monotonic() - started)
    try:
        _parity(plan, tests, left)
    except Exception as exc:
        tests.rows.append(["eomt vs transformers", f"failed: {type(exc).__name__}: {last_line(str(exc))}"])
        section.status = "failed: eomt vs transformers"


def _run_cuda_tests(limit_s: float) -> str:
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-o", "addopts=", "-v", "-rs",
           "--continue-on-collection-errors", *CUDA_TEST_FILES]
    code, out, err = run_capped(cmd, limit_s, child_env())
    counts = {word: 0 for word in ("PASSED", "FAILED", "SKIPPED", "ERROR")}
    failed = []
    for line in out.splitlines():
        for word in counts:
            if f" {word}" in line and "::" in line:
                counts[word] += 1
                if word in ("FAILED", "ERROR"):
                    failed.append(line.split(" ")[0].split("::")[-1])
    summary = ", ".join(f"{n} {w.lower()}" for w, n in counts.items() if n) or "no test ran"
    if code is None:
        return f"stopped after {limit_s:.0f} s: {summary}"
    if code == 5:
        return "no test collected"
    skipped_why = sorted({line.split(":", 2)[-1].strip() for line in out.splitlines() if line.startswith("SKIPPED")})
    detail = f" ({'; '.join(skipped_why)[:200]})" if counts["SKIPPED"] and not counts["PASSED"] else ""
    detail += f"; failed: {', '.join(failed)[:300]}" if failed else ""
    if "errors during collection" in out or "ERROR collecting" in out:
        detail += "; a test file did not import: " + last_line(out + err)
    return f"exit {code}: {summary}{detail}"


def _parity(plan: Plan, table: Table, limit_s: float) -> None:
    """eomt vs transformers on the device: logits in float32, and panoptic class maps in bfloat16."""
    import torch
    from fps import build, class_map

    from eomt import EomtForUniversalSegmentation
    from eomt.processing.image_processor import EomtImageProcessor

    size, image = plan.parity_model
    device = plan.device
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "model"
        build(size, image, directory)  # transformers' weights, sharpened so that photos get segments
        import transformers

        theirs = transformers.EomtForUniversalSegmentation.from_pretrained(directory).to(device).eval()
        ours = EomtForUniversalSegmentation.from_pretrained(directory, device_map=device).eval()
        processor = EomtImageProcessor.from_pretrained(directory)
        from PIL import Image

        photos = [Image.open(ROOT / "examples" / name).convert("RGB") for name in ("coffee.png", "chelsea.png")]
        pixels = processor(photos, device=device).pixel_values
        with torch.inference_mode():
            a, b = ours(pixels), theirs(pixel_values=pixels)
            diff_cls = (a.class_queries_logits - b.class_queries_logits).abs().max().item()
            diff_masks = (a.masks_queries_logits - b.masks_queries_logits).abs().max().item()
            scale = b.masks_queries_logits.abs().max().item()
            hw = tuple(pixels.shape[-2:])
            reference = class_map(processor, b.class_queries_logits, b.masks_queries_logits, hw)
            same = (class_map(processor, a.class_queries_logits, a.masks_queries_logits, hw) == reference)
            verdict = "ok" if max(diff_cls, diff_masks) <= 1e-3 * max(1.0, scale) else "TOO LARGE"
            table.rows.append([f"eomt vs transformers logits, {device} float32 (ViT-{size} {image}, 2 photos)",
                               f"{verdict}: max abs diff class {diff_cls:.1e}, masks {diff_masks:.1e} (masks up to "
                               f"{scale:.0f}); panoptic class map equal on {same.float().mean().item() * 100:.2f}%"])
            segments = sum(len(set(m.unique().tolist()) - {-1}) for m in reference)
            theirs_bf16 = theirs.to(torch.bfloat16)
            ours_bf16 = ours.to(torch.bfloat16).float32_heads()  # what eomt predict --dtype bfloat16 runs
            for name, model, call in (("eomt bfloat16 backbone, float32 heads", ours_bf16, lambda m, x: m(x)),
                                      ("transformers bfloat16", theirs_bf16, lambda m, x: m(pixel_values=x))):
                out = call(model, pixels.to(torch.bfloat16))
                got = class_map(processor, out.class_queries_logits, out.masks_queries_logits, hw)
                table.rows.append([f"{name} vs transformers float32 ({device}): panoptic class map",
                                   f"{(got == reference).float().mean().item() * 100:.2f}% of pixels agree "
                                   f"({segments} classes in the float32 maps)"])


# ----------------------------------------------------------------------------------------------- 3. fps


def section_fps(plan: Plan, section: Section, limit_s: float) -> None:
    """The FPS table: every job in a worker process, capped; rows missing from a stopped job are reported."""
    ended = time.monotonic() + limit_s
    table = Table(["model", "input", "batch", "dtype", "runtime", "FPS", "ms / batch", "vs transformers",
                   "mask logits max diff vs transformers", "compile s"])
    section.tables.append(table)
    section.notes.append(f"device {plan.device}; random seeded weights (the same in both libraries), random input; "
                         f"median of {plan.fps_runs} interleaved timed calls after {plan.fps_warmup} warm-up calls, "
                         "CUDA synchronised around each; vs transformers = transformers eager / this runtime, "
                         "same dtype (> 1: faster). compiled = torch.compile default; autotuned = "
                         "mode max-autotune (CUDA graphs included), both dynamic=False.")
    if plan.compile_backend != "inductor":
        section.notes.append(f"dry run: compiled rows use torch.compile(backend={plan.compile_backend!r}), not "
                             "inductor; the figures measure nothing.")
    names = {"eager": "eomt eager", "compiled": "eomt compiled", "autotuned": "eomt max-autotune",
             "transformers": "transformers eager"}
    dropped = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, job in enumerate(plan.fps_jobs):
            left = ended - time.monotonic()
            if left < 15:
                dropped += [f"{_row_name(r)} ({', '.join(job.modes)})" for r in job.rows]
                continue
            result_path = Path(tmp) / f"job{index}.json"
            spec = {"device": plan.device, "rows": job.rows, "modes": job.modes, "runs": plan.fps_runs,
                    "warmup": plan.fps_warmup, "backend": plan.compile_backend}
            limit = min(job.cap_s, left)
            code, _, err = run_capped([sys.executable, __file__, "--fps-worker", json.dumps(spec), str(result_path)],
                                      limit, child_env())
            done = json.loads(result_path.read_text()) if result_path.exists() else {"rows": []}
            finished = {tuple(r["row"]) for r in done["rows"]}
            for entry in done["rows"]:
                model, image, batch, dtype = entry["row"]
                for mode in ["transformers", *job.modes]:
                    found = entry["runtimes"].get(mode)
                    if found:
                        table.rows.append([f"ViT-{model}", image, batch, dtype, names[mode], found["fps"],
                                           found["ms"], found["vs_transformers"], found["max_diff"],
                                           found.get("compile_s")])
                    elif entry.get("compiling", {}).get("mode") == mode:
                        waited = done.get("now", 0) - entry["compiling"]["since"] + (limit - done.get("elapsed", 0))
                        table.rows.append([f"ViT-{model}", image, batch, dtype, names[mode],
                                           f"compile > {max(waited, 0):.0f} s", None, None, None, None])
                    elif entry.get("error"):
                        table.rows.append([f"ViT-{model}", image, batch, dtype, names[mode],
                                           f"failed: {entry['error']}", None, None, None, None])
            unfinished = [r for r in job.rows if tuple(r) not in finished]
            if code is None:
                dropped += [f"{_row_name(r)}" for r in unfinished]
                section.notes.append(f"job {index + 1} ({len(job.rows)} rows, {', '.join(job.modes)}) stopped at its "
                                     f"cap of {limit:.0f} s.")
            elif code != 0:
                section.notes.append(f"job {index + 1} failed: {last_line(err)}")
                dropped += [f"{_row_name(r)}" for r in unfinished]
    if dropped:
        section.notes.append("dropped (time budget): " + "; ".join(dropped))
        section.status = "partial: rows dropped for time"
    if not table.rows:
        section.status = "failed: no row measured"


def _row_name(row) -> str:
    model, image, batch, dtype = row
    return f"ViT-{model} {image} batch {batch} {dtype}"


def fps_worker(spec: dict, result_path: Path) -> None:
    """Measure `spec`'s rows, writing what is measured after every step (the parent may kill this process)."""
    import torch

    allow_transformers_eomt_without_scipy()
    started = time.time()
    device, runs, warmup = spec["device"], spec["runs"], spec["warmup"]
    results: dict[str, Any] = {"rows": []}

    def save() -> None:
        results["now"], results["elapsed"] = time.time(), time.time() - started
        _write_atomic(result_path, json.dumps(results))

    built: dict[tuple[str, int], tuple] = {}
    for row in spec["rows"]:
        model_size, image, batch, dtype_name = row
        entry: dict[str, Any] = {"row": row, "runtimes": {}}
        results["rows"].append(entry)
        try:
            if (model_size, image) not in built:  # kept: the grid comes back to a size (ViT-g: 9 GB for both)
                built[(model_size, image)] = reference_pair(model_size, image, device)
            theirs32, ours32 = built[(model_size, image)]
            dtype = getattr(torch, dtype_name)
            theirs = theirs32 if dtype == torch.float32 else copy.deepcopy(theirs32).to(dtype)
            ours = ours32 if dtype == torch.float32 else copy.deepcopy(ours32).to(dtype)
            x = torch.randn(batch, 3, image, image, generator=torch.Generator().manual_seed(1)).to(device, dtype)
            calls = {"transformers": lambda x, m=theirs: m(pixel_values=x).masks_queries_logits,
                     "eager": lambda x, m=ours: m(x).masks_queries_logits}
            for mode in spec["modes"]:
                if mode != "eager":
                    entry["compiling"] = {"mode": mode, "since": time.time()}
                    save()
                    calls[mode], seconds = _compiled(ours, mode, spec["backend"], x)
                    del entry["compiling"]
                    entry.setdefault("compile_s", {})[mode] = seconds
                _measure(calls, x, runs, warmup, device, entry)
                save()
            del theirs, ours, calls
        except Exception as exc:
            entry.pop("compiling", None)
            entry["error"] = f"{type(exc).__name__}: {last_line(str(exc))}"
            save()
    save()


def _compiled(model, mode: str, backend: str, x) -> tuple[Any, float]:
    """A compiled copy of `model` and the seconds its first call (the compile) took."""
    import torch

    model = copy.deepcopy(model)
    model.mask_probs()  # read outside the graph, as Segmenter does
    if backend == "inductor":
        compiled = torch.compile(model, mode="max-autotune" if mode == "autotuned" else None, dynamic=False)
    else:
        compiled = torch.compile(model, backend=backend, dynamic=False)
    started = time.perf_counter()
    with torch.inference_mode():
        compiled(x)
    sync(str(x.device))
    return (lambda x, m=compiled: m(x).masks_queries_logits), time.perf_counter() - started


def _measure(calls: dict, x, runs: int, warmup: int, device: str, entry: dict) -> None:
    """Every runner of `calls` timed interleaved (A, B, C, C, B, A, ...); medians into entry["runtimes"]."""
    import torch

    with torch.inference_mode():
        reference = calls["transformers"](x).float()
        diffs = {name: (call(x).float() - reference).abs().max().item() for name, call in calls.items()}
        for _ in range(warmup):
            for call in calls.values():
                call(x)
        times: dict[str, list[float]] = {name: [] for name in calls}
        order = list(calls)
        for i in range(runs):
            for name in order if i % 2 == 0 else order[::-1]:
                sync(device)
                start = time.perf_counter()
                calls[name](x)
                sync(device)
                times[name].append(time.perf_counter() - start)
    theirs = statistics.median(times["transformers"])
    for name, values in times.items():
        median = statistics.median(values)
        entry["runtimes"][name] = {"fps": x.shape[0] / median, "ms": median * 1e3, "vs_transformers": theirs / median,
                                   "max_diff": diffs[name], "compile_s": entry.get("compile_s", {}).get(name)}


# ----------------------------------------------------------------------------------------------- 4. e2e


def section_e2e(plan: Plan, section: Section, limit_s: float) -> None:
    gone = missing("pycocotools", "scipy")
    if gone:
        section.status = (f"skipped: needs {', '.join(gone)} (eomt predict writes COCO panoptic files and overlays; "
                          "the transformers pipeline alone compares nothing)")
        return
    import fps

    ended = time.monotonic() + limit_s
    size, image = plan.e2e_model
    table = Table(["runner", "images/s (job)", "images/s (wall)", "wall s", "same segment and class as transformers"])
    section.tables.append(table)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir, photos = tmp / "model", tmp / "photos"
        fps.build(size, image, model_dir)
        fps.make_photos(photos, plan.e2e_photos)
        section.notes.append(f"{plan.e2e_photos} JPEG photos 480-1024 px wide (benchmarks/fps.py make_photos), ViT-"
                             f"{size} {image} panoptic with random sharpened weights (fps.build), {plan.device}; "
                             f"one fresh process per runner (imports and model load in the wall time; eomt's job "
                             f"images/s from summary.json excludes the model load but includes a compile); eomt "
                             f"batch {plan.e2e_batch}, {plan.e2e_workers} decode workers; the pipeline runs float32, "
                             "one image at a time, with eomt's thresholds.")
        env = child_env()
        theirs_out = tmp / "transformers"
        runners = [("transformers pipeline", None), ("eomt predict --dtype bfloat16", [])]
        if plan.e2e_compile:
            runners.append(("eomt predict --dtype bfloat16 --compile", ["--compile"]))
        else:
            section.notes.append("dry run: the --compile runner is not run (inductor's CPU compile needs minutes).")
        outs = {}
        for name, extra in runners:
            left = ended - time.monotonic()
            if left < 10:
                table.rows.append([name, "dropped (time budget)", None, None, None])
                continue
            if extra is None:
                cmd = [sys.executable, "-c", fps.THEIRS_SCRIPT, str(model_dir), str(photos), plan.device,
                       str(theirs_out)]
            else:
                outs[name] = tmp / f"out{len(outs)}"
                cmd = [sys.executable, "-m", "eomt", "predict", str(photos), "--model", str(model_dir), "--out",
                       str(outs[name]), "--task", "panoptic", "--device", plan.device, "--dtype", "bfloat16",
                       "--batch-size", str(plan.e2e_batch), "--num-workers", str(plan.e2e_workers), "-q", *extra]
            start = time.time()
            code, out, err = run_capped(cmd, left, env)
            wall = (float(out.split()[-1]) if extra is None and code == 0 else time.time()) - start
            if code is None:
                what = "compile included" if extra else "load included"
                table.rows.append([name, f"not done in {left:.0f} s ({what})", None, None, None])
                outs.pop(name, None)
            elif code != 0:
                table.rows.append([name, f"failed: {last_line(err)}", None, None, None])
                outs.pop(name, None)
            else:
                job = json.loads((outs[name] / "summary.json").read_text())["images_per_second"] if extra is not None \
                    else None
                table.rows.append([name, job, plan.e2e_photos / wall, wall, None])
        stuff = {f"LABEL_{i}" for i in range(80, 133)}  # what eomt predict merges for a 133-class model (COCO)
        for row in table.rows:
            if row[0] in outs and theirs_out.exists():
                same = total = 0
                for png in sorted(outs[row[0]].glob("*.png")):
                    ours = fps._ours_segments(png, stuff)
                    same += fps._segmentation_agreement(ours, fps._theirs_segments(theirs_out, png.stem, stuff))
                    total += ours[0].size
                row[4] = f"{same / total * 100:.2f}%" if total else "-"
    if any(isinstance(r[1], str) for r in table.rows):
        section.status = "partial: a runner did not finish"


# ----------------------------------------------------------------------------------------------- 5. training


def section_training(plan: Plan, section: Section, limit_s: float) -> None:
    gone = missing("scipy")
    if gone:
        section.status = "skipped: needs scipy (the loss's Hungarian matching, in eomt and in transformers)"
        return
    import train_speed

    ended = time.monotonic() + limit_s
    spec = dict(train_speed.CONFIGS.get(plan.train_config, DRY_TRAIN))
    table = Table(["library", "batch", "ms / step", "images/s", "peak GPU memory MB" if plan.device != "cpu"
                   else "peak RSS MB", "vs transformers"])
    section.tables.append(table)
    section.notes.append(f"benchmarks/train_speed.py's step (config {plan.train_config!r}: {spec}): forward with "
                         f"targets (masked attention on), loss, backward, AdamW, under torch.autocast(bfloat16) with "
                         f"float32 weights (Fabric's bf16-mixed); median of {plan.train_steps} steps after one; "
                         f"each library in its own process. `eomt train` itself needs lightning_fabric.")
    results = {}
    for library in ("eomt", "transformers"):
        left = ended - time.monotonic()
        if left < 5:
            table.rows.append([library, "dropped (time budget)", None, None, None, None])
            continue
        cmd = [sys.executable, "-c", train_speed.WORKER, library, plan.train_config, str(plan.train_steps),
               plan.device, "bfloat16", json.dumps(spec)]
        code, out, err = run_capped(cmd, left, child_env())
        if code != 0:
            table.rows.append([library, "not done in time" if code is None else f"failed: {last_line(err)}",
                               None, None, None, None])
            continue
        results[library] = json.loads(out.strip().splitlines()[-1])
    for library, r in results.items():
        theirs = results.get("transformers", {}).get("ms")
        table.rows.append([library, r["batch"], r["ms"], r["batch"] / r["ms"] * 1e3, r["peak_mb"],
                           theirs / r["ms"] if theirs else None])
    if len(results) < 2:
        section.status = "partial: a library did not finish"


# ----------------------------------------------------------------------------------------------- 6. large images


def section_large(plan: Plan, section: Section, limit_s: float) -> None:
    import torch
    import transformers

    from eomt.modeling.eomt import EomtOutput
    from eomt.processing.image_processor import EomtImageProcessor

    device = plan.device
    height, width = plan.large_image
    queries, (lh, lw) = plan.large_queries, plan.large_logits
    g = torch.Generator().manual_seed(0)
    # trained-like logits: a third of the queries are confident of one class, each over its own rectangle
    kept = queries // 3
    blobs = torch.full((1, queries, lh, lw), -10.0)
    for q in range(kept):
        top, left = torch.randint(0, lh * 3 // 4, (1,), generator=g).item(), torch.randint(0, lw * 3 // 4, (1,),
                                                                                            generator=g).item()
        blobs[0, q, top:top + lh // 4, left:left + lw // 4] = 10.0
    blobs += torch.randn(blobs.shape, generator=g)
    classes = torch.randn(1, queries, LABELS + 1, generator=g)
    classes[0, torch.arange(kept), torch.randint(0, LABELS, (kept,), generator=g)] += 15
    classes[0, kept:, -1] += 15
    outputs = EomtOutput(class_queries_logits=classes.to(device), masks_queries_logits=blobs.to(device))
    size = {"shortest_edge": 4 * lh, "longest_edge": 4 * lw}
    ours = EomtImageProcessor(size=size, do_pad=True)
    theirs = transformers.EomtImageProcessor(size=size, do_pad=True)
    table = Table(["post-processing", "ms", "peak memory above the logits MB", "segments", "vs transformers"])
    section.tables.append(table)
    section.notes.append(f"{width}x{height} ({width * height / 1e6:.0f} MP) image, {queries} queries, {LABELS} "
                         f"classes, mask logits {lh}x{lw} (a {4 * lh} px padded input), {device}; a third of the "
                         "queries pass the 0.8 threshold, each over its own rectangle. Peak = "
                         "torch.cuda.max_memory_allocated during the call minus what was allocated before it "
                         "(CUDA only).")
    maps = {}
    for name, processor in (("eomt", ours), ("transformers", theirs)):
        for attempt in range(2):  # the first call warms up the kernels; the second is reported
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
            sync(device)
            start = time.perf_counter()
            with torch.inference_mode():
                result = processor.post_process_panoptic_segmentation(outputs, target_sizes=[(height, width)])
            sync(device)
            seconds = time.perf_counter() - start
            peak = (torch.cuda.max_memory_allocated() - before) / 2**20 if device.startswith("cuda") else None
            if attempt:
                table.rows.append([name, seconds * 1e3, peak if peak is not None else "n/a (cpu)",
                                   len(result[0]["segments_info"]), None])
                maps[name] = result[0]["segmentation"].long().cpu()
            del result
    same = (maps["eomt"] == maps["transformers"]).float().mean().item()
    table.rows[0][4] = f"{table.rows[1][1] / table.rows[0][1]:.2f}x faster, same segment map on {same * 100:.2f}%"


# ----------------------------------------------------------------------------------------------- main


RUNNERS = {"env": section_env, "correctness": section_correctness, "fps": section_fps, "e2e": section_e2e,
           "training": section_training, "large": section_large}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="gpu_report", help="report folder (default ./gpu_report)")
    parser.add_argument("--dry-run", action="store_true", help="every section on CPU with tiny sizes")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 450; dry 170)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {','.join(SECTIONS)}")
    parser.add_argument("--fps-worker", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fps_worker:
        fps_worker(json.loads(args.fps_worker[0]), Path(args.fps_worker[1]))
        return 0
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)} (expected some of {','.join(SECTIONS)})")
    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        parser.error(f"{out} exists and is not a folder")
    if missing("torch"):
        print("gpu_checks: error: torch is not importable by this python (" + sys.executable + ")", file=sys.stderr)
        return 1
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_checks: error: no CUDA device here; use --dry-run to check the script on CPU", file=sys.stderr)
        return 1
    plan = dry_plan(args.budget or 170) if args.dry_run else gpu_plan(args.budget or 450)
    sys.path.insert(0, str(BENCHMARKS))
    os.chdir(ROOT)  # fps.make_photos reads examples/ from the working directory
    os.environ.update({k: v for k, v in child_env().items() if k.startswith(("HF_", "TRANSFORMERS_"))})
    with contextlib.suppress(Exception):
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    without_scipy = not missing("transformers") and allow_transformers_eomt_without_scipy()
    clock = Clock(plan.budget_s)
    report = Report(out, {"command": " ".join(["benchmarks/gpu_checks.sh", *(argv or sys.argv[1:])]),
                          "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                          "device": torch.cuda.get_device_name() if plan.device == "cuda" else f"CPU ({cpu_model()})",
                          "dry run": args.dry_run, "budget s": plan.budget_s})
    if without_scipy:
        report.meta["scipy"] = ("missing: transformers' EoMT is built without its scipy check (its loss, unused "
                                "in inference, needs scipy)")
    started = time.monotonic()
    for index, key in enumerate(chosen):
        section = Section(key)
        limit = clock.share(plan.section_s[key], len(chosen) - index - 1)
        print(f"[gpu_checks] {TITLES[key]} (up to {limit:.0f} s)", flush=True)
        begun = time.monotonic()
        if limit < 5:
            section.status = "skipped: the run's time budget is spent"
        else:
            try:
                RUNNERS[key](plan, section, limit)
            except Exception as exc:
                section.status = f"failed: {type(exc).__name__}: {last_line(str(exc))}"
                if os.environ.get("EOMT_DEBUG"):
                    traceback.print_exc()
        section.seconds = time.monotonic() - begun
        if plan.device == "cuda":
            torch.cuda.empty_cache()
        print(f"[gpu_checks] {TITLES[key]}: {section.status}", flush=True)
        report.add(section)
    report.meta["wall s"] = round(time.monotonic() - started, 1)
    report.write()
    print(report.markdown())
    print(f"[gpu_checks] wrote {out / 'gpu_report.md'} and {out / 'gpu_report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
