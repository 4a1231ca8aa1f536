"""Bad input through the real `eomt` command line: one error line naming the culprit, never a traceback,
and no file created or changed.

Each case of CASES is (id, argv, setup, exit code, words the error line must hold). `argv` may use
{d} (the case's own folder, also the working directory), {model} (a tiny model folder), {data} (a small
synthetic COCO-panoptic dataset) and {img} (an image). `setup(d, world)` writes the case's bad files
before the snapshot is taken; the snapshot covers the case folder and the shared fixtures.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.cli.commands import DATASET_KINDS, main
from eomt.processing.image_processor import EomtImageProcessor
from eomt.training.synthetic import make_synthetic_dataset

HAS_CUDA = torch.cuda.is_available()
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_blocks=1, num_queries=4, image_size=32,
            num_labels=7, train_num_points=64)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    model = EomtForUniversalSegmentation(EomtConfig(**TINY))
    model.save_pretrained(root / "model")
    EomtImageProcessor(size=32, do_pad=True, task="panoptic", stuff_classes=[4, 5, 6]).save_pretrained(root / "model")
    data = make_synthetic_dataset(root / "data", num_train=2, num_val=3, size=32, seed=1)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "photo.png")
    return {"root": root, "model": root / "model", "data": data, "img": root / "photo.png"}


# ---- setups: each writes the bad input of one case into its folder `d` ---------------------------------------


def model_copy(d: Path, world) -> Path:
    target = d / "m"
    shutil.copytree(world["model"], target)
    return target


def config_change(**changes):
    def setup(d, world):
        target = model_copy(d, world)
        config = json.loads((target / "config.json").read_text())
        config.update(changes)
        (target / "config.json").write_text(json.dumps(config))
    return setup


def config_text(text: str):
    def setup(d, world):
        (model_copy(d, world) / "config.json").write_text(text)
    return setup


def weights_dtype(dtype: torch.dtype):
    def setup(d, world):
        target = model_copy(d, world)
        tensors = load_file(target / "model.safetensors")
        key = next(k for k in tensors if k.endswith("query.weight"))
        tensors[key] = tensors[key].to(dtype)
        save_file(tensors, target / "model.safetensors")
    return setup


def sharded(weight_map):
    def setup(d, world):
        target = model_copy(d, world)
        (target / "model.safetensors").rename(target / "model-00001-of-00001.safetensors")
        (target / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return setup


def file_bytes(name: str, data: bytes):
    def setup(d, world):
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    return setup


def pickle_with(obj):
    def setup(d, world):
        torch.save(obj, d / "weights.bin")
    return setup


class Foreign:  # not a tensor: a weights-only load must refuse it
    pass


def recipe_cycle(d, world):
    (d / "a.yaml").write_text(f"base: {d / 'b.yaml'}\n")
    (d / "b.yaml").write_text(f"base: {d / 'a.yaml'}\n")


def run_folder(last: bytes | None = None, obj=None):
    def setup(d, world):
        (d / "run").mkdir()
        if obj is not None:
            torch.save(obj, d / "run" / "last.ckpt")
        elif last is not None:
            (d / "run" / "last.ckpt").write_bytes(last)
    return setup


def truncated_checkpoint(d, world):
    (d / "run").mkdir()
    torch.save({"model": {"w": torch.randn(256, 256)}, "optimizer": {}, "step": 3, "epoch": 0, "batch": 3,
                "rng": {}}, d / "run" / "last.ckpt")
    data = (d / "run" / "last.ckpt").read_bytes()
    (d / "run" / "last.ckpt").write_bytes(data[: len(data) // 2])


def non_empty_folder(name: str):
    def setup(d, world):
        (d / name).mkdir()
        (d / name / "keep.txt").write_text("the user's file")
    return setup


def perfect_predictions(d, world) -> Path:
    """The ground truth of the val split, as `eomt predict` files (dataset category ids)."""
    preds = d / "preds"
    preds.mkdir()
    data = world["data"]
    doc = json.loads((data / "annotations" / "panoptic_val2017.json").read_text())
    for ann in doc["annotations"]:
        stem = Path(ann["file_name"]).stem
        shutil.copy(data / "annotations" / "panoptic_val2017" / ann["file_name"], preds / f"{stem}.png")
        (preds / f"{stem}.json").write_text(json.dumps({"segments_info": ann["segments_info"]}))
    return preds


def predictions_then(change):
    def setup(d, world):
        preds = perfect_predictions(d, world)
        change(preds, sorted(p.stem for p in preds.glob("*.png")))
    return setup


def _drop_one(preds, stems):
    (preds / f"{stems[0]}.png").unlink()
    (preds / f"{stems[0]}.json").unlink()


def _json_is_list(preds, stems):
    (preds / f"{stems[0]}.json").write_text("[1, 2]")


def _corrupt_png(preds, stems):
    (preds / f"{stems[0]}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")


def _png_is_a_folder(preds, stems):
    (preds / f"{stems[0]}.png").unlink()
    (preds / f"{stems[0]}.png").mkdir()


def _bad_segment_id(preds, stems):
    (preds / f"{stems[0]}.json").write_text(json.dumps({"segments_info": [{"id": "x", "category_id": 1}]}))


def _segments_not_list(preds, stems):
    (preds / f"{stems[0]}.json").write_text(json.dumps({"segments_info": 5}))


def dataset_then(change):
    def setup(d, world):
        target = d / "ds"
        shutil.copytree(world["data"], target)
        change(target)
    return setup


def _annotations_wrong_types(root):
    path = root / "annotations" / "panoptic_val2017.json"
    doc = json.loads(path.read_text())
    doc["images"] = {"not": "a list"}
    path.write_text(json.dumps(doc))


def _annotations_not_json(root):
    (root / "annotations" / "panoptic_val2017.json").write_text("{ not json")


def _segments_wrong_type(root):
    path = root / "annotations" / "panoptic_val2017.json"
    doc = json.loads(path.read_text())
    doc["annotations"][0]["segments_info"] = "oops"
    path.write_text(json.dumps(doc))


def _panoptic_json(change):
    def edit(root):
        path = root / "annotations" / "panoptic_val2017.json"
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))
    return edit


def _second_image_id(doc):
    doc["images"][1]["id"] = doc["images"][0]["id"]


def _second_image_record(doc):
    doc["images"].append({**doc["images"][0], "id": 999})
    doc["annotations"].append({**doc["annotations"][0], "image_id": 999})


def _second_annotation(doc):
    doc["annotations"].append({**doc["annotations"][1], "image_id": doc["annotations"][0]["image_id"]})


def _segment_id_twice(doc):
    segments = doc["annotations"][0]["segments_info"]
    other = next(c["id"] for c in doc["categories"] if c["id"] != segments[0]["category_id"])
    segments.append({**segments[0], "category_id": other})


def _no_val_images(doc):
    doc["images"], doc["annotations"] = [], []


def _gt_png_corrupt(root):
    first = sorted((root / "annotations" / "panoptic_val2017").glob("*.png"))[0]
    first.write_bytes(b"not a png at all")


def _gt_png_is_a_folder(root):
    first = sorted((root / "annotations" / "panoptic_val2017").glob("*.png"))[0]
    first.unlink()
    first.mkdir()


def zip_bomb(d, world):
    """The dataset as one zip whose annotation JSON expands ~1000-fold (64 MiB of spaces)."""
    data = world["data"]
    with zipfile.ZipFile(d / "coco.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(data.rglob("*")):
            if path.is_file() and path.name != "panoptic_val2017.json":
                z.write(path, path.relative_to(data).as_posix())
        doc = json.loads((data / "annotations" / "panoptic_val2017.json").read_text())
        text = json.dumps(doc)
        z.writestr("annotations/panoptic_val2017.json", text[:-1] + " " * (65 << 20) + "}")


def existing_file(name: str):
    def setup(d, world):
        (d / name).write_text("a file")
    return setup


EVAL = ["eval", "--model", "{model}", "--data", "{data}", "--dataset", "coco_panoptic"]
PRED_EVAL = ["eval", "-p", "{d}/preds", "--data", "{data}", "--dataset", "coco_panoptic"]
TRAIN = ["train", "-r", "synthetic_tiny", "--data", "{data}", "--out", "{d}/run", "-q"]

CASES = [
    # -- usage errors (exit 2), one line each ------------------------------------------------------------------
    ("no-command", [], None, 2, ["required: COMMAND"]),
    ("unknown-command", ["frobnicate"], None, 2, ["invalid choice: 'frobnicate'"]),
    ("predict-b-0", ["predict", "{img}", "-b", "0"], None, 2, ["--batch-size", "at least 1, got 0"]),
    ("predict-b-neg", ["predict", "{img}", "-b", "-1"], None, 2, ["--batch-size", "got -1"]),
    ("predict-b-float", ["predict", "{img}", "-b", "2.5"], None, 2, ["--batch-size", "'2.5'"]),
    ("predict-threshold-high", ["predict", "{img}", "--threshold", "1.5"], None, 2, ["--threshold", "'1.5'"]),
    ("predict-threshold-neg", ["predict", "{img}", "--threshold", "-0.1"], None, 2, ["--threshold", "'-0.1'"]),
    ("predict-threshold-nan", ["predict", "{img}", "--threshold", "nan"], None, 2, ["--threshold", "'nan'"]),
    ("predict-device-foo", ["predict", "{img}", "-d", "foo"], None, 2, ["--device", "unknown device 'foo'"]),
    ("predict-task-bad", ["predict", "{img}", "--task", "depth"], None, 2, ["--task", "'depth'"]),
    ("eval-limit-neg", EVAL + ["--limit", "-1"], None, 2, ["--limit", "got -1"]),
    ("eval-limit-0", EVAL + ["--limit", "0"], None, 2, ["--limit", "got 0"]),
    ("eval-b-0", EVAL + ["-b", "0"], None, 2, ["--batch-size", "got 0"]),
    ("eval-dataset-foo", ["eval", "--model", "{model}", "--data", "{data}", "--dataset", "foo"], None, 2,
     ["--dataset", "'foo'"]),
    ("eval-model-and-predictions", EVAL + ["-p", "{d}"], None, 2, ["not allowed with argument"]),
    ("synthetic-train-neg", ["synthetic", "{d}/s", "--train", "-3"], None, 2, ["--train", "got -3"]),
    ("synthetic-seed-word", ["synthetic", "{d}/s", "--seed", "x"], None, 2, ["--seed", "'x'"]),
    ("convert-set-no-equals", ["convert", "{model}", "{d}/out", "--set", "novalue"], None, 2,
     ["--set", "expected key=value"]),
    ("train-no-recipe", ["train", "--data", "{data}"], None, 2, ["--recipe"]),
    # -- command-line values ---------------------------------------------------------------------------------
    ("predict-out-is-file", ["predict", "{img}", "-m", "{model}", "--out", "{d}/taken"], existing_file("taken"), 1,
     ["{d}/taken", "not a folder"]),
    ("predict-out-under-file", ["predict", "{img}", "-m", "{model}", "--out", "{d}/taken/sub"],
     existing_file("taken"), 1, ["{d}/taken", "is a file"]),
    ("eval-out-is-file", EVAL + ["--out", "{d}/taken"], existing_file("taken"), 1, ["{d}/taken", "not a folder"]),
    ("predict-model-missing", ["predict", "{img}", "-m", "{d}/nowhere", "--out", "{d}/o"], None, 1,
     ["{d}/nowhere", "no such file"]),
    pytest.param("predict-cuda-missing", ["predict", "{img}", "-m", "{model}", "-d", "cuda"], None, 1,
                 ["--device cuda", "CUDA is not available"], marks=pytest.mark.skipif(HAS_CUDA, reason="has CUDA")),
    pytest.param("eval-cuda-missing", EVAL + ["-d", "cuda:0"], None, 1, ["--device cuda:0", "not available"],
                 marks=pytest.mark.skipif(HAS_CUDA, reason="has CUDA")),
    # -- config.json fields ------------------------------------------------------------------------------------
    ("config-hidden-size-bool", ["info", "{d}/m"], config_change(hidden_size=True), 1,
     ["config.json", "hidden_size must be a whole number, got True"]),
    ("config-image-size-list1", ["info", "{d}/m"], config_change(image_size=[640]), 1,
     ["config.json", "image_size must be one whole number or [height, width]"]),
    ("config-registers-float", ["info", "{d}/m"], config_change(num_register_tokens=1.5), 1,
     ["num_register_tokens must be a whole number, got 1.5"]),
    ("config-id2label-list", ["info", "{d}/m"], config_change(id2label=["a", "b"]), 1,
     ["id2label must be a JSON object"]),
    ("config-layers-absurd", ["info", "{d}/m"], config_change(num_hidden_layers=100000), 1,
     ["num_hidden_layers 100000 is absurdly large"]),
    ("config-layers-vs-weights", ["convert", "{d}/m", "{d}/out"], config_change(num_hidden_layers=200), 1,
     ["{d}/m", "the weights have 2 layers, the config says num_hidden_layers 200"]),
    ("config-queries-vs-weights", ["predict", "{img}", "-m", "{d}/m", "-o", "{d}/o", "-q"],
     config_change(num_queries=9), 1, ["{d}/m", "'query.weight' has shape (4, 32), the model expects (9, 32)"]),
    ("config-hidden-string", ["info", "{d}/m"], config_change(hidden_size="big"), 1,
     ["hidden_size must be a whole number, got 'big'"]),
    ("config-act-number", ["info", "{d}/m"], config_change(hidden_act=5), 1, ["hidden_act must be a string"]),
    ("config-patch-zero", ["info", "{d}/m"], config_change(patch_size=0), 1, ["patch_size must be a positive"]),
    ("config-model-type", ["info", "{d}/m"], config_change(model_type="bert"), 1, ["unknown model_type 'bert'"]),
    ("config-dropout-inf", ["info", "{d}/m"], config_change(attention_dropout=1e999), 1,
     ["attention_dropout must be a finite number"]),
    ("config-not-json", ["info", "{d}/m"], config_text("{ nope"), 1, ["config.json", "cannot read config"]),
    ("config-a-list", ["info", "{d}/m"], config_text("[1, 2]"), 1, ["config.json", "must be a JSON object"]),
    ("config-deep-nesting", ["info", "{d}/m"], config_text("[" * 100000 + "]" * 100000), 1, ["config.json"]),
    ("weights-int", ["convert", "{d}/m", "{d}/out"], weights_dtype(torch.int64), 1,
     ["{d}/m", "query.weight", "dtype int64", "floating point"]),
    ("weights-bool", ["predict", "{img}", "-m", "{d}/m", "-o", "{d}/o"], weights_dtype(torch.bool), 1,
     ["dtype bool"]),
    ("index-weight-map-list", ["convert", "{d}/m", "{d}/out"], sharded(["a", "b"]), 1,
     ["model.safetensors.index.json", "weight_map must be a non-empty object"]),
    ("index-path-escapes", ["convert", "{d}/m", "{d}/out"], sharded({"query.weight": "../x.safetensors"}), 1,
     ["index.json", "'../x.safetensors' is not a .safetensors file inside the model folder"]),
    ("index-absolute-path", ["convert", "{d}/m", "{d}/out"], sharded({"query.weight": "/etc/passwd"}), 1,
     ["'/etc/passwd' is not a .safetensors file"]),
    ("index-shard-number", ["convert", "{d}/m", "{d}/out"], sharded({"query.weight": 7}), 1,
     ["weight_map['query.weight'] must be a shard file name"]),
    ("weights-garbage", ["info", "{d}/weights.bin"], file_bytes("weights.bin", b"\x00" * 64), 1,
     ["{d}/weights.bin", "truncated or not a checkpoint"]),
    ("weights-empty", ["convert", "{d}/weights.bin", "{d}/out"], file_bytes("weights.bin", b""), 1,
     ["{d}/weights.bin", "file is empty"]),
    ("weights-foreign-pickle", ["info", "{d}/weights.bin"], pickle_with({"x": Foreign()}), 1,
     ["{d}/weights.bin", "refused to load"]),
    ("weights-not-dict", ["info", "{d}/weights.bin"], pickle_with([torch.zeros(2)]), 1,
     ["{d}/weights.bin", "expected a dictionary of tensors"]),
    ("info-missing", ["info", "{d}/nowhere"], None, 1, ["{d}/nowhere", "no such file or directory"]),
    ("info-no-config", ["info", "{d}"], None, 1, ["{d}", "no config.json"]),
    # -- recipes -----------------------------------------------------------------------------------------------
    ("recipe-lr-empty", TRAIN + ["train.lr="], None, 1, ["train.lr must be a finite number > 0, got None"]),
    ("recipe-batch-float", TRAIN + ["train.batch_size=2.5"], None, 1, ["train.batch_size", "got 2.5"]),
    ("recipe-epochs-inf", TRAIN + ["train.epochs=.inf"], None, 1, ["train.epochs", "got inf"]),
    ("recipe-log-every-0", TRAIN + ["train.log_every=0"], None, 1, ["train.log_every", "got 0"]),
    ("recipe-max-steps-neg", TRAIN + ["train.max_steps=-5"], None, 1, ["train.max_steps", "got -5"]),
    ("recipe-warmup-neg", TRAIN + ["train.warmup=-1"], None, 1, ["train.warmup", "got -1"]),
    ("recipe-grad-clip-neg", TRAIN + ["train.grad_clip=-1"], None, 1, ["train.grad_clip", "got -1"]),
    ("recipe-weight-decay-neg", TRAIN + ["train.weight_decay=-0.1"], None, 1, ["train.weight_decay", "got -0.1"]),
    ("recipe-lr-word", TRAIN + ["train.lr=fast"], None, 1, ["train.lr", "'fast'"]),
    ("recipe-base-cycle", ["train", "-r", "{d}/a.yaml", "--data", "{data}"], recipe_cycle, 1,
     ["cycle", "a.yaml -> b.yaml -> a.yaml"]),
    ("recipe-config-typo", TRAIN + ["model.config.hiden_size=8"], None, 1,
     ["model.config.hiden_size is not a config field"]),
    ("recipe-config-type", TRAIN + ["model.config.hidden_size=true"], None, 1,
     ["model.config.hidden_size must be a whole number"]),
    pytest.param("recipe-accelerator-gpu", TRAIN + ["train.accelerator=gpu"], None, 1,
                 ["train.accelerator=gpu", "no CUDA GPU"], marks=pytest.mark.skipif(HAS_CUDA, reason="has CUDA")),
    ("recipe-precision", TRAIN + ["train.precision=fp8"], None, 1, ["train.precision 'fp8'"]),
    ("recipe-unknown-key", TRAIN + ["train.lrr=1"], None, 1, ["unknown key train.lrr"]),
    ("recipe-unknown-section", TRAIN + ["optim.lr=1"], None, 1, ["unknown section 'optim'"]),
    ("recipe-override-form", TRAIN + ["lr=1"], None, 1, ["'lr=1'", "section.key=value"]),
    ("recipe-not-mapping", ["train", "-r", "{d}/r.yaml", "--data", "{data}"], file_bytes("r.yaml", b"- 1\n"), 1,
     ["r.yaml", "must be a mapping"]),
    ("recipe-bad-yaml", ["train", "-r", "{d}/r.yaml", "--data", "{data}"], file_bytes("r.yaml", b"a: [\n"), 1,
     ["r.yaml", "cannot read recipe"]),
    ("recipe-yaml-tab", ["train", "-r", "{d}/r.yaml", "--data", "{data}"],
     file_bytes("r.yaml", b"name: x\ntrain:\n\tlr: 1\n"), 1,
     ["r.yaml", "line 3, column 1", "found character '\\t'", "not tabs"]),
    ("recipe-yaml-unclosed", ["train", "-r", "{d}/r.yaml", "--data", "{data}"], file_bytes("r.yaml", b"a: [1,\n"), 1,
     ["r.yaml", "line 2, column 1", "expected the node content"]),
    ("recipe-unknown-preset", ["train", "-r", "no_such_preset", "--data", "{data}"], None, 1,
     ["no recipe file or preset named 'no_such_preset'"]),
    ("recipe-crop-zero", TRAIN + ["data.crop_size=0"], None, 1, ["data.crop_size", "got 0"]),
    ("recipe-scale-range", TRAIN + ["data.scale_range=[2, 1]"], None, 1, ["data.scale_range"]),
    ("recipe-devices-zero", TRAIN + ["train.devices=0"], None, 1, ["train.devices", "got 0"]),
    ("recipe-dataset-kind", TRAIN + ["data.dataset=imagenet"], None, 1, ["data.dataset 'imagenet'"]),
    ("train-data-missing", ["train", "-r", "synthetic_tiny", "--data", "{d}/nowhere", "--out", "{d}/run"], None, 1,
     ["{d}/nowhere", "does not exist"]),
    ("convert-set-typo", ["convert", "{model}", "{d}/out", "--set", "hiden_size=8"], None, 1,
     ["--set hiden_size: not a config field"]),
    ("convert-set-bad-type", ["convert", "{model}", "{d}/out", "--set", "hidden_size=true"], None, 1,
     ["hidden_size must be a whole number, got True"]),
    ("convert-set-vs-weights", ["convert", "{model}", "{d}/out", "--set", "num_queries=9"], None, 1,
     ["'query.weight' has shape (4, 32)", "num_queries 9"]),
    # -- resuming and run folders --------------------------------------------------------------------------------
    ("resume-nothing", TRAIN + ["--resume"], None, 1, ["{d}/run/last.ckpt", "no checkpoint to resume from"]),
    ("resume-truncated", TRAIN + ["--resume"], truncated_checkpoint, 1, ["{d}/run/last.ckpt", "truncated"]),
    ("resume-garbage", TRAIN + ["--resume"], run_folder(last=b"garbage" * 10), 1, ["{d}/run/last.ckpt", "corrupt"]),
    ("resume-foreign", TRAIN + ["--resume"], run_folder(obj={"state_dict": {"w": torch.zeros(2)}}), 1,
     ["{d}/run/last.ckpt", "not an eomt training checkpoint"]),
    ("resume-and-overwrite", TRAIN + ["--resume", "--overwrite"], run_folder(last=b"x"), 1,
     ["--resume and --overwrite exclude each other"]),
    ("train-existing-run", TRAIN, run_folder(last=b"an earlier run"), 1,
     ["{d}/run", "already holds a run (last.ckpt)", "--overwrite"]),
    # -- output folders that hold the user's files ---------------------------------------------------------------
    ("convert-into-existing", ["convert", "{model}", "{d}/out"], non_empty_folder("out"), 1,
     ["{d}/out", "already holds files (keep.txt)", "--overwrite"]),
    ("convert-into-file", ["convert", "{model}", "{d}/out"], existing_file("out"), 1, ["OUT {d}/out", "not a folder"]),
    ("synthetic-into-existing", ["synthetic", "{d}/s"], non_empty_folder("s"), 1,
     ["{d}/s", "already holds files", "--overwrite"]),
    ("synthetic-into-file", ["synthetic", "{d}/s"], existing_file("s"), 1, ["{d}/s", "not a folder"]),
    # -- datasets and prediction files ---------------------------------------------------------------------------
    ("eval-data-missing", ["eval", "-m", "{model}", "--data", "{d}/nowhere", "--dataset", "coco_panoptic"], None,
     1, ["{d}/nowhere", "does not exist"]),
    ("eval-predictions-missing", ["eval", "-p", "{d}/nowhere", "--data", "{data}", "--dataset", "coco_panoptic"],
     None, 1, ["{d}/nowhere", "does not exist"]),
    ("eval-split-missing", EVAL + ["--split", "test"], None, 1, ["test"]),
    ("eval-partial-predictions", PRED_EVAL, predictions_then(_drop_one), 1,
     ["{d}/preds", "cover 2 of the 3 images", "1 missing (000000000001)"]),
    ("eval-prediction-json-list", PRED_EVAL, predictions_then(_json_is_list), 1,
     ["000000000001.json", "no 'segments_info' list"]),
    ("eval-prediction-segments-int", PRED_EVAL, predictions_then(_segments_not_list), 1,
     ["000000000001.json", "no 'segments_info' list"]),
    ("eval-prediction-png-corrupt", PRED_EVAL, predictions_then(_corrupt_png), 1,
     ["000000000001.png", "not a readable panoptic PNG"]),
    ("eval-prediction-png-folder", PRED_EVAL, predictions_then(_png_is_a_folder), 1,
     ["000000000001.png", "not a PNG file"]),
    ("eval-prediction-bad-id", PRED_EVAL, predictions_then(_bad_segment_id), 1,
     ["000000000001.json", "invalid id or category_id"]),
    ("dataset-json-wrong-types", ["eval", "-m", "{model}", "--data", "{d}/ds", "--dataset", "coco_panoptic"],
     dataset_then(_annotations_wrong_types), 1, ["panoptic_val2017.json", "images"]),
    ("dataset-json-invalid", ["eval", "-m", "{model}", "--data", "{d}/ds", "--dataset", "coco_panoptic"],
     dataset_then(_annotations_not_json), 1, ["panoptic_val2017.json", "invalid JSON"]),
    ("dataset-segments-wrong-type", ["eval", "-m", "{model}", "--data", "{d}/ds", "--dataset", "coco_panoptic"],
     dataset_then(_segments_wrong_type), 1, ["panoptic_val2017.json", "segments_info"]),
    ("dataset-png-corrupt", ["eval", "-m", "{model}", "--data", "{d}/ds", "--dataset", "coco_panoptic", "-q"],
     dataset_then(_gt_png_corrupt), 1, ["000000000001.png"]),
    ("dataset-png-folder", ["eval", "-m", "{model}", "--data", "{d}/ds", "--dataset", "coco_panoptic", "-q"],
     dataset_then(_gt_png_is_a_folder), 1, ["000000000001.png"]),
    ("dataset-image-id-twice", ["eval", "-m", "{model}", "--data", "{d}/ds", "--dataset", "coco_panoptic"],
     dataset_then(_panoptic_json(_second_image_id)), 1,
     ["panoptic_val2017.json", "images[1] (000000000002.png) has id 1,",
      "which images[0] (000000000001.png) already has"]),
    ("dataset-image-file-twice", ["eval", "-m", "{model}", "--data", "{d}/ds", "--dataset", "coco_panoptic"],
     dataset_then(_panoptic_json(_second_image_record)), 1,
     ["images[3] (id 999) has file_name '000000000001.png', as images[0] (id 1) does"]),
    ("dataset-second-annotation", ["eval", "-m", "{model}", "--data", "{d}/ds", "--dataset", "coco_panoptic"],
     dataset_then(_panoptic_json(_second_annotation)), 1,
     ["panoptic_val2017.json", "annotations[3] (000000000002.png) is a second annotation of image 000000000001.png",
      "after annotations[0] (000000000001.png)"]),
    ("dataset-segment-id-twice", ["eval", "-m", "{model}", "--data", "{d}/ds", "--dataset", "coco_panoptic"],
     dataset_then(_panoptic_json(_segment_id_twice)), 1,
     ["annotations[0].segments_info of 000000000001.png lists segment id", "twice", "different fields (category_id"]),
    ("dataset-no-val-images", ["eval", "-m", "{model}", "--data", "{d}/ds", "--dataset", "coco_panoptic"],
     dataset_then(_panoptic_json(_no_val_images)), 1, ["{d}/ds", "val split of coco_panoptic holds no images"]),
    ("train-no-val-images", ["train", "-r", "synthetic_tiny", "--data", "{d}/ds", "--out", "{d}/run", "-q",
                             "train.batch_size=2"],
     dataset_then(_panoptic_json(_no_val_images)), 1,
     ["{d}/ds", "the val split (data.val_split) holds no images", "best checkpoint"]),
    ("dataset-zip-bomb", ["eval", "-m", "{model}", "--data", "{d}/coco.zip", "--dataset", "coco_panoptic"],
     zip_bomb, 1, ["coco.zip/annotations/panoptic_val2017.json", "zip bomb"]),
    ("eval-model-classes-differ", ["eval", "-m", "{d}/m", "--data", "{data}", "--dataset", "coco_panoptic"],
     lambda d, world: EomtForUniversalSegmentation(EomtConfig(**{**TINY, "num_labels": 3})).save_pretrained(d / "m"),
     1, ["{d}/m", "predicts 3 classes", "has 7"]),
]


def _snapshot(*roots: Path) -> dict[str, tuple[str, int, str]]:
    state = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            kind = "dir" if path.is_dir() else "file"
            digest = hashlib.sha1(path.read_bytes()).hexdigest() if kind == "file" else ""
            state[str(path)] = (kind, path.stat().st_mode, digest)
    return state


def _fill(text: str, d: Path, world) -> str:
    return text.format(d=d, model=world["model"], data=world["data"], img=world["img"])


@pytest.mark.parametrize("case_id, argv, setup, code, expected", CASES, ids=[
    c.values[0] if hasattr(c, "values") else c[0] for c in CASES])
def test_bad_input_is_one_line_naming_the_culprit(case_id, argv, setup, code, expected, world, tmp_path,
                                                  monkeypatch, capsys):
    d = tmp_path / "case"
    d.mkdir()
    if setup is not None:
        setup(d, world)
    monkeypatch.chdir(d)
    monkeypatch.delenv("EOMT_DEBUG", raising=False)
    before = _snapshot(d, world["root"])
    try:
        exit_code = main([_fill(a, d, world) for a in argv])
    except SystemExit as exc:  # usage errors leave through argparse
        exit_code = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_code == code, err
    assert len(lines) == 1, err
    assert "Traceback" not in err + out
    assert lines[0].startswith("eomt"), lines[0]
    assert ": error: " in lines[0], lines[0]
    for word in expected:
        assert _fill(word, d, world) in lines[0], lines[0]
    assert _snapshot(d, world["root"]) == before, "files were created or changed"


def test_the_table_holds_at_least_sixty_cases():
    assert len(CASES) >= 60


def test_the_console_command_prints_the_same_single_line(world, tmp_path):
    """The installed entry point (python -m eomt runs cli.main): no traceback, one line, exit codes."""
    bad = tmp_path / "config"
    shutil.copytree(world["model"], bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "hidden_size": True}))
    for argv, code, word in ((["info", str(bad)], 1, "hidden_size must be a whole number"),
                             (["predict", "x.png", "-b", "0"], 2, "--batch-size")):
        run = subprocess.run([sys.executable, "-m", "eomt", *argv], capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == code
        assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
        assert word in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config"]


def test_help_does_not_import_torch():
    """`eomt --help` answers without importing torch (seconds on a busy machine)."""
    code = "import sys; from eomt.cli.commands import build_parser; build_parser(); print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "False"


def test_dataset_choices_match_the_readers():
    from eomt.data import DATASET_KINDS as READER_KINDS

    assert DATASET_KINDS == READER_KINDS


def test_an_unexpected_error_is_still_one_line(monkeypatch, capsys):
    import eomt.cli.commands as cli

    def broken(args):
        raise IndexError("list index out of range")

    monkeypatch.setattr(cli, "cmd_info", broken)
    monkeypatch.delenv("EOMT_DEBUG", raising=False)
    assert cli.main(["info", "x"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unexpected IndexError" in err and "EOMT_DEBUG=1" in err
