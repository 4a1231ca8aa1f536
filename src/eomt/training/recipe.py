"""Recipes: typed, validated training configurations read from YAML (data, not code).

A recipe has three sections, `model`, `data` and `train`; `load_recipe(name_or_file, overrides)`
reads a bundled preset (src/eomt/recipes/NAME.yaml) or a file, applies `section.key=value`
overrides and refuses unknown keys, naming them.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import RecipeError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
WEIGHT_DECAY_POLICIES = ("all", "matrices")  # see eomt.training.schedules.param_groups


@dataclass
class ModelSection:
    config: dict[str, Any] = field(default_factory=dict)  # EomtConfig fields (num_labels from the data)
    pretrained: str | None = None  # fine-tune a published EoMT (class head re-initialised if K differs)
    backbone: str | None = None  # or start from a DINOv2 / DINOv3 backbone checkpoint


@dataclass
class DataSection:
    dataset: str = "coco_panoptic"
    path: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    crop_size: int = 640
    scale_range: tuple[float, float] = (0.1, 2.0)
    photometric: bool = False
    num_workers: int = 4


@dataclass
class TrainSection:
    epochs: float = 12
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 4  # per device
    accumulate: int = 1  # gradient accumulation: global batch = batch_size x devices x accumulate
    lr: float = 1e-4
    weight_decay: float = 0.05
    weight_decay_policy: str = "all"  # "all" (the authors': every parameter) or "matrices" (no norms, biases, tokens)
    layer_decay: float = 0.8
    llrd_l2: bool = True  # false: the last num_blocks blocks skip the layer decay (the authors' DINOv3 COCO runs)
    warmup: int = 500
    backbone_warmup: int = 1000
    poly_power: float = 0.9
    grad_clip: float = 0.01
    annealing_starts: list[int] | None = None  # iterations; None: windows as fractions of the run
    annealing_ends: list[int] | None = None
    annealing_power: float = 0.9
    freeze_backbone: bool = False
    activation_checkpointing: bool = False
    compile: bool = False
    precision: str = "32-true"  # Fabric precision: 32-true, bf16-mixed, 16-mixed
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    seed: int = 0
    log_every: int = 20
    eval_every: int | None = None  # steps; None: at the end of every epoch
    eval_limit: int | None = None  # evaluate on the first N validation images
    checkpoint_every: int | None = None  # steps; None: at the end of every epoch
    out: str = "runs/eomt"
    wandb: bool = False


@dataclass
class Recipe:
    name: str = "custom"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelSection, "data": DataSection, "train": TrainSection}


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        from ..data.errors import yaml_problem

        raise RecipeError(f"{path}: cannot read recipe ({yaml_problem(exc)})") from None
    except (OSError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RecipeError(f"{path}: cannot read recipe ({reason})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping with model / data / train sections")
    return data


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _resolve(name_or_file: str | os.PathLike, chain: tuple[Path, ...] = ()) -> tuple[Path, dict[str, Any]]:
    if not isinstance(name_or_file, (str, os.PathLike)) or not str(name_or_file):
        raise RecipeError(f"{chain[-1] if chain else 'recipe'}: base must name a preset or a file, "
                          f"got {name_or_file!r}")
    path = Path(name_or_file)
    if not path.is_file():
        candidate = RECIPES_DIR / f"{name_or_file}.yaml"
        if not candidate.is_file():
            raise RecipeError(f"no recipe file or preset named {str(name_or_file)!r}; presets: "
                              + ", ".join(available_recipes()))
        path = candidate
    if path.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, path.resolve()))
        raise RecipeError(f"{path}: base recipes form a cycle ({cycle})")
    data = _read_yaml(path)
    parent = data.pop("base", None)  # a recipe may extend another preset
    if parent is not None:
        _, base = _resolve(parent, (*chain, path.resolve()))
        data = _merge(base, data)
    return path, data


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """`section.key=value` (value parsed as YAML); `model.config.key=value` reaches the model config."""
    key, sep, value = assignment.partition("=")
    if not sep or "." not in key:
        raise RecipeError(f"override {assignment!r} must look like section.key=value, e.g. train.lr=2e-4")
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"override {assignment!r}: {part!r} is not a section")
    node[parts[-1]] = _parse_value(value)


def _build_section(cls, values: dict[str, Any], where: str):
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping")
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in values if k not in known]
    if unknown:
        raise RecipeError(f"{where}: unknown key {where.split(':')[-1].strip()}.{unknown[0]} "
                          f"(known: {', '.join(known)})")
    return cls(**values)  # values are checked by recipe_checks.check_recipe_values


def load_recipe(name_or_file: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    path, data = _resolve(name_or_file)
    for assignment in overrides or []:
        apply_override(data, assignment)
    unknown = [k for k in data if k not in _SECTIONS and k != "name"]
    if unknown:
        raise RecipeError(f"{path}: unknown section {unknown[0]!r} (known: name, model, data, train)")
    sections = {name: _build_section(cls, data.get(name) or {}, f"{path}: {name}") for name, cls in _SECTIONS.items()}
    recipe = Recipe(name=str(data.get("name", path.stem)), **sections)
    from .recipe_checks import check_recipe_values

    check_recipe_values(recipe, str(path))
    validate(recipe)
    return recipe


def validate(recipe: Recipe) -> None:
    t, d = recipe.train, recipe.data
    checks = [
        (t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}"),
        (t.accumulate >= 1, f"train.accumulate must be >= 1, got {t.accumulate}"),
        (t.lr > 0, f"train.lr must be positive, got {t.lr}"),
        (0 < t.layer_decay <= 1, f"train.layer_decay must be in (0, 1], got {t.layer_decay}"),
        (t.weight_decay_policy in WEIGHT_DECAY_POLICIES,
         f"train.weight_decay_policy must be one of {', '.join(WEIGHT_DECAY_POLICIES)}, "
         f"got {t.weight_decay_policy!r}"),
        (isinstance(t.llrd_l2, bool), f"train.llrd_l2 must be true or false, got {t.llrd_l2!r}"),
        (t.epochs > 0 or (t.max_steps or 0) > 0, "train.epochs or train.max_steps must be positive"),
        ((t.annealing_starts is None) == (t.annealing_ends is None),
         "train.annealing_starts and train.annealing_ends go together"),
        (d.crop_size > 0, f"data.crop_size must be positive, got {d.crop_size}"),
        (len(d.scale_range) == 2 and 0 < d.scale_range[0] <= d.scale_range[1],
         f"data.scale_range must be [min, max] with 0 < min <= max, got {d.scale_range}"),
        (not (recipe.model.pretrained and recipe.model.backbone),
         "model.pretrained and model.backbone exclude each other"),
    ]
    for ok, message in checks:
        if not ok:
            raise RecipeError(message)
