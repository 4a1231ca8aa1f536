"""Every message is true where it appears: the Python API names its arguments, each command its own flags,
and a hint never asks for what is already so (HF_HUB_OFFLINE=1 when it is set)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.cli.commands import build_parser, main
from eomt.cli.errors import HUB_HINTS, MEMORY_HINTS, command_flags, command_parser, describe, to_command_line

SRC = Path(__file__).resolve().parents[2] / "src" / "eomt"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    EomtForUniversalSegmentation(EomtConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1,
                                            num_queries=4, image_size=32, num_labels=3)).save_pretrained(root)
    return root


def _offline(tmp_path: Path, *argv: str) -> str:
    """The last stderr line of `python -m eomt ARGV` with HF_HUB_OFFLINE=1 and an empty hub cache."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "eomt", *argv], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    return run.stderr.strip()


def test_predict_offline_says_what_is_true_and_how_to_pass_a_model(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    line = _offline(tmp_path, "predict", "x.png", "-q", "--out", "out", "--model", "org/not-cached")
    assert "HF_HUB_OFFLINE=1 forbids downloads" in line and "not in the local cache" in line
    assert str(tmp_path / "cache") in line  # where it looked
    assert "set HF_HUB_OFFLINE" not in line  # it is set already
    assert "--model PATH" in line


def test_info_offline_names_its_own_argument_not_a_flag_it_lacks(tmp_path):
    line = _offline(tmp_path, "info", "org/not-cached")
    assert line.startswith("eomt info: error: ") and "'org/not-cached'" in line
    assert str(tmp_path / "cache") in line and "set HF_HUB_OFFLINE" not in line
    assert "--model" not in line and "SOURCE may be a local directory" in line


def test_from_pretrained_offline_names_no_flag(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path)}
    code = ("from eomt import EomtForUniversalSegmentation, CheckpointError\n"
            "try:\n    EomtForUniversalSegmentation.from_pretrained('org/not-cached')\n"
            "except CheckpointError as exc:\n    print(exc)\n")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    message = run.stdout.strip()
    assert run.returncode == 0 and message, run.stderr
    assert not FLAG.search(message) and "eomt " not in message, message
    assert "HF_HUB_OFFLINE=1 forbids downloads" in message and str(tmp_path / "cache") in message
    assert "set HF_HUB_OFFLINE" not in message and "local directory or checkpoint file" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_segmenter_on_missing_cuda_names_the_argument(model_dir):
    from eomt import Segmenter

    with pytest.raises(ValueError) as info:
        Segmenter.from_pretrained(model_dir, device="cuda")
    message = str(info.value)
    assert "CUDA is not available" in message and "device='cpu'" in message
    assert not FLAG.search(message), message


def test_predict_folder_names_arguments_the_command_line_names_flags(model_dir, tmp_path, capsys):
    from eomt import predict_folder
    from eomt.config import ConfigError

    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    with pytest.raises(ConfigError) as info:
        predict_folder(tmp_path / "x.png", tmp_path / "out", model_dir, batch_size=0)
    assert "`batch_size` must be at least 1" in str(info.value) and not FLAG.search(str(info.value))

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x.png").write_bytes(b"an earlier result")
    with pytest.raises(ConfigError) as info:
        predict_folder(tmp_path / "x.png", tmp_path / "out", model_dir, progress=False)
    assert "`skip_existing=True`" in str(info.value) and not FLAG.search(str(info.value))

    assert main(["predict", str(tmp_path / "x.png"), "-m", str(model_dir), "-o", str(tmp_path / "out"), "-q"]) == 1
    line = capsys.readouterr().err.strip()
    assert "pass --skip-existing to continue that run, or --overwrite to replace its files" in line, line
    assert "`" not in line


def test_training_run_folder_speaks_of_arguments_in_python(tmp_path):
    from eomt.training.errors import TrainingError
    from eomt.training.run_folder import prepare_run_folder

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.ckpt").write_bytes(b"an earlier run")
    with pytest.raises(TrainingError) as info:
        prepare_run_folder(tmp_path / "run", resume=False, overwrite=False)
    assert "`resume=True`" in str(info.value) and not FLAG.search(str(info.value))


def test_arguments_become_the_commands_flags():
    parser = build_parser()
    predict = command_flags(command_parser(parser, "predict"))
    assert to_command_line("`batch_size` must be at least 1", predict) == "--batch-size must be at least 1"
    assert to_command_line("use `device='cpu'`", predict) == "use --device cpu"
    assert to_command_line("pass `overwrite=True`", predict) == "pass --overwrite"
    assert to_command_line("`out` x: not a folder", predict) == "--out x: not a folder"
    assert to_command_line("see `eomt train` and `height`", predict) == "see `eomt train` and `height`"
    convert = command_flags(command_parser(parser, "convert"))
    assert to_command_line("`out` x: not a folder", convert) == "OUT x: not a folder"
    assert to_command_line("`overrides` hiden_size: not a config field", convert) == (
        "--set hiden_size: not a config field")


def test_every_hint_names_only_flags_its_command_takes():
    parser = build_parser()
    for table in (MEMORY_HINTS, HUB_HINTS):
        for command, hint in table.items():
            flags = {name for name, _ in command_flags(command_parser(parser, command)).values()}
            for flag in FLAG.findall(hint):
                assert flag in flags, f"eomt {command} has no {flag} ({hint})"
    for command in ("predict", "eval", "train", "export", "info", "convert", "synthetic"):
        flags = {name for name, _ in command_flags(command_parser(parser, command)).values()}
        for flag in FLAG.findall(describe(MemoryError(), command)):
            assert flag in flags, f"eomt {command}: the out-of-memory hint names {flag}"


def _message_strings(path: Path):
    """String constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value


# the out-of-memory hint of one image (jobs/predict.py `inference_failure`) is being recomputed from the case under
# another item of issue 19; it goes to summary.json, not through the command line's translation
PENDING = {("jobs/predict.py", "downscale it")}


def test_no_library_message_names_a_command_line_flag():
    """Outside cli/ a message can be read from Python, where no flag exists: name the argument (in backticks,
    which the command line turns into its flag) or a whole command (`eomt export --dynamic`)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] in ("cli", "serve"):  # serve/ is `eomt serve`'s own code
            continue
        for line, text in _message_strings(path):
            if any(str(path.relative_to(SRC)) == file and words in text for file, words in PENDING):
                continue
            for match in FLAG.finditer(text):
                if not re.search(r"eomt [a-z]+( [^`]*)? $", text[:match.start()]):
                    found.append(f"{path.relative_to(SRC)}:{line}: {text.strip()[:90]!r}")
    assert not found, "\n".join(found)
