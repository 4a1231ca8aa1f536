"""The training loop: Lightning Fabric for devices, precision and DDP; the EoMT recipe in plain code.

Per optimiser step: set the masked-attention probabilities of the annealing schedule, set every
group's learning rate (layer-wise decay x two-stage warmup + poly), forward with targets (the model
returns the deep-supervised loss), backward, clip, step. Checkpoints hold everything needed to
resume exactly: weights, optimiser, step, epoch, position in the epoch and RNG states.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import EomtConfig
from ..data import open_dataset
from ..modeling.eomt import EomtForUniversalSegmentation
from ..outputs.atomic import atomic_path, write_json_atomic
from .errors import TrainingError
from .interrupt import StopFlag, TrainingInterrupted, stop_on_signals
from .recipe import Recipe
from .run_folder import check_same_network
from .schedules import WarmupPoly, annealing_probabilities, annealing_windows, param_groups, set_learning_rates


def build_model(recipe: Recipe, num_labels: int, id2label: dict[int, str]) -> EomtForUniversalSegmentation:
    """The model a recipe starts from: a published EoMT (`model.pretrained`, class head re-initialised for the
    data's classes), a DINOv2 / DINOv3 backbone (`model.backbone`, new heads) or random weights."""
    spec = recipe.model
    overrides = {**spec.config, "num_labels": num_labels, "id2label": id2label}
    if spec.pretrained:
        from ..checkpoints.errors import CheckpointError

        try:
            model = EomtForUniversalSegmentation.from_pretrained(spec.pretrained, reinit_class_head=True,
                                                                 **overrides)
        except CheckpointError as exc:
            raise TrainingError(f"model.pretrained: {exc} (to start from a local copy, override "
                                f"model.pretrained=PATH with a model directory or checkpoint file)") from None
        return model.train()
    config = EomtConfig(**overrides)
    if spec.backbone:
        from ..checkpoints.backbone_init import build_from_backbone

        return build_from_backbone(config, spec.backbone).train()
    return EomtForUniversalSegmentation(config).train()


def describe_start(recipe: Recipe, model: EomtForUniversalSegmentation) -> str:
    """One line saying where the weights came from: which were loaded and which start fresh."""
    from ..checkpoints.backbone_init import BACKBONE_PREFIXES
    from ..checkpoints.load import CLASS_HEAD

    keys = list(model.state_dict())
    spec = recipe.model
    if spec.pretrained:
        fresh = [k for k in keys if k in CLASS_HEAD]
        return (f"initialised from {spec.pretrained}: loaded {len(keys) - len(fresh)} tensors; re-initialised "
                f"{', '.join(fresh)} ({model.config.num_labels} classes)")
    if spec.backbone:
        loaded = [k for k in keys if k.startswith(BACKBONE_PREFIXES)]
        return (f"initialised from backbone {spec.backbone}: loaded {len(loaded)} backbone tensors; "
                f"{len(keys) - len(loaded)} tensors (queries, heads, upscaler) start fresh")
    return f"initialised from random weights ({len(keys)} tensors)"


def scored_on(best: dict[str, Any]) -> str:
    """How many validation images a val metric is on, e.g. "on 32 of 50 val images" (train.eval_limit)."""
    images, total = best.get("images"), best.get("of")
    if images is None or total is None:  # a checkpoint written before the count was recorded
        return "(val images not recorded)"
    return f"on all {total} val images" if images == total else f"on {images} of {total} val images"


def _rng_state() -> dict[str, Any]:
    """Random states as tensors and plain values, so checkpoints load with `weights_only=True`."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos,
                                                      has_gauss, gauss], "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Runs one recipe; `fit()` trains (resuming from `out/last.ckpt` when asked) and returns a summary."""

    def __init__(self, recipe: Recipe, progress: bool = True) -> None:
        from lightning_fabric import Fabric
        from lightning_fabric.loggers import CSVLogger

        self.recipe = recipe
        t = recipe.train
        self.out = Path(t.out)
        loggers = [CSVLogger(str(self.out), name="logs")]  # logs/version_N: a resumed run keeps earlier logs
        tensorboard = _tensorboard_logger(self.out)
        if tensorboard is not None:
            loggers.append(tensorboard)
        self.fabric = Fabric(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
                             strategy=t.strategy, precision=t.precision, loggers=loggers)
        self.progress = progress
        self.wandb = None
        self._evaluated_at: int | None = None
        self._run_total: int | None = None

    # ---- setup ---------------------------------------------------------------------------------

    def _data(self):
        from .augment import AugmentConfig, TrainTransform
        from .data import TrainingDataset, build_loader

        d = self.recipe.data
        if not d.path:
            raise TrainingError("no data path: set data.path in the recipe")
        train = open_dataset(d.dataset, d.path, d.train_split)
        if len(train) == 0:
            raise TrainingError(f"{d.path}: the {d.train_split} split holds no images")
        transform = TrainTransform(AugmentConfig(crop_size=d.crop_size, scale_range=tuple(d.scale_range),
                                                 photometric=d.photometric))
        t = self.recipe.train
        dataset = TrainingDataset(train, transform, train.info.num_classes, seed=t.seed)
        # the loader has its own generator: starting an epoch must not draw from the global RNG, or a
        # resumed run's random stream would shift
        loader = build_loader(dataset, t.batch_size, d.num_workers, seed=t.seed, rank=self.fabric.global_rank,
                              world_size=self.fabric.world_size)
        if loader.sampler.per_rank() < t.batch_size:
            raise TrainingError(f"{d.path}: {len(dataset)} training images are fewer than one batch per process")
        val = self._validation()
        if val is not None and len(val) == 0:  # the best checkpoint would be chosen on a metric of no image (NaN)
            raise TrainingError(f"{d.path}: the {d.val_split} split (data.val_split) holds no images, so there is "
                                "nothing to validate on or to choose the best checkpoint by; add validation images "
                                "or set data.val_split to a split that has some")
        return train, dataset, loader.sampler, loader

    def _validation(self):
        """The validation split, or None when the dataset has no such split (training then validates nothing);
        a split that is there but cannot be read is an error, not a silent run without validation."""
        from ..data.errors import DatasetFileMissingError

        d = self.recipe.data
        try:
            return open_dataset(d.dataset, d.path, d.val_split)
        except DatasetFileMissingError:
            return None
        except ValueError as exc:
            raise TrainingError(f"data.val_split {d.val_split!r}: {exc}") from None

    # ---- checkpoints ---------------------------------------------------------------------------

    def _save(self, name: str, state: dict[str, Any]) -> Path:
        """Write through a temporary name, then rename: an interrupted write never replaces a good file.
        The metric logs are flushed first, so that a killed run keeps every metric up to its checkpoint."""
        for logger in self.fabric.loggers:
            logger.save()
        path = self.out / name
        tmp = self.out / f".{name}.tmp"
        try:
            self.fabric.save(tmp, {**state, "rng": _rng_state()})
            if self.fabric.is_global_zero:
                os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.fabric.barrier()
        return path

    # ---- the loop ------------------------------------------------------------------------------

    def fit(self, resume: bool = False, stop_at: int | None = None) -> dict[str, Any]:
        """Train; `resume` continues from out/last.ckpt; `stop_at` stops after that many steps (the schedule
        stays that of the whole run), as an interruption would."""
        fabric, r, t = self.fabric, self.recipe, self.recipe.train
        fabric.launch()
        if t.wandb and fabric.is_global_zero:
            try:
                import wandb  # noqa: F401  (checked before any work; the run starts once there is work)
            except ImportError:
                raise TrainingError("train.wandb=true needs the wandb package (pip install wandb)") from None
        fabric.seed_everything(t.seed, verbose=False)
        train_set, dataset, sampler, loader = self._data()  # a dataset refused leaves no run folder behind
        self.out.mkdir(parents=True, exist_ok=True)
        info = train_set.info
        model = build_model(r, info.num_classes, dict(enumerate(info.class_names)))
        self.model = model
        last = self.out / "last.ckpt"
        resuming = resume and last.exists()
        if not resuming:  # a resumed run's weights come from last.ckpt, whatever the model was built from
            fabric.print(describe_start(r, model))
        model.gradient_checkpointing = t.activation_checkpointing
        groups = param_groups(model, t.weight_decay, t.layer_decay, t.freeze_backbone, llrd_l2=t.llrd_l2,
                              weight_decay_policy=t.weight_decay_policy)
        optimizer = torch.optim.AdamW(groups, lr=t.lr)
        forward_model = torch.compile(model) if t.compile else model
        wrapped, optimizer = fabric.setup(forward_model, optimizer)

        steps_per_epoch = len(sampler) // t.batch_size // t.accumulate
        total = t.max_steps or max(1, math.floor(t.epochs * steps_per_epoch))
        starts, ends = (t.annealing_starts, t.annealing_ends) if t.annealing_starts is not None else (
            annealing_windows(total, model.config.num_blocks))
        if len(starts) != model.config.num_blocks:
            raise TrainingError(f"train.annealing_starts has {len(starts)} entries, the model has "
                                f"{model.config.num_blocks} query blocks")
        schedule = WarmupPoly(total, t.warmup, t.backbone_warmup, t.poly_power)

        # config and processor make last.ckpt / best.ckpt loadable wherever a model is accepted
        state: dict[str, Any] = {"model": model, "optimizer": optimizer, "step": 0, "epoch": 0, "batch": 0,
                                 "best": None, "recipe": r.to_dict(), "config": model.config.to_dict(),
                                 "processor": self._processor(info).to_dict()}
        final = self.out / "final"
        if resuming:
            check_same_network(last, model)
            try:
                remainder = fabric.load(last, state)
            except (RuntimeError, ValueError, KeyError) as exc:  # e.g. an optimiser of other parameter groups
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
                raise TrainingError(f"{last}: cannot resume with this recipe ({reason}); resume with the recipe "
                                    "it was trained with, or start afresh (`overwrite=True`)") from None
            _set_rng_state(remainder["rng"])
            if state["step"] >= total:  # a finished run: nothing to train, nothing to rewrite
                exported = _is_exported(final)
                if not exported:  # stopped between the last checkpoint and the export: only that is left
                    model.attn_mask_probs.zero_()
                    if fabric.is_global_zero:
                        self._export(model, final, info)
                    fabric.barrier()
                return {"steps": state["step"], "total": total, "final": str(final), "best": state["best"],
                        "history": [], "nothing_to_do": exported, "exported_only": not exported}
            fabric.print(f"resuming from {last} at step {state['step']} of {total}")
        if t.wandb and fabric.is_global_zero:
            import wandb

            self.wandb = wandb.init(project="eomt", name=r.name, config=r.to_dict(), dir=str(t.out))
        fabric.print(f"training {r.name}: {total} steps, {steps_per_epoch} per epoch, global batch "
                     f"{t.batch_size * fabric.world_size * t.accumulate}, annealing starts {starts} ends {ends}")
        self._run_total = total
        with stop_on_signals() as stop:
            history = self._loop(wrapped, model, optimizer, loader, sampler, dataset, state, stop_at or total,
                                 schedule, starts, ends, stop)
        if state["step"] < total:
            return {"steps": state["step"], "final": None, "best": state["best"], "history": history}
        model.attn_mask_probs.zero_()
        if fabric.is_global_zero:
            self._export(model, final, info)
        fabric.barrier()
        return {"steps": state["step"], "final": str(final), "best": state["best"], "history": history,
                "skipped_samples": dataset.stats.get("skipped", 0) if hasattr(dataset, "stats") else 0}

    def _loop(self, wrapped, model, optimizer, loader, sampler, dataset, state, total, schedule,
              starts, ends, stop: StopFlag | None = None) -> list[dict[str, float]]:
        from ..outputs.progress import progress_bar

        fabric, t = self.fabric, self.recipe.train
        history: list[dict[str, float]] = []
        bar = progress_bar(total, self.recipe.name, "steps", enabled=self.progress and fabric.is_global_zero,
                           initial=state["step"])
        started, first = time.perf_counter(), state["step"]
        while state["step"] < total:
            epoch = state["epoch"]
            dataset.set_epoch(epoch)
            sampler.start = state["batch"] * t.batch_size  # resuming mid-epoch
            micro = 0
            for batch in loader:
                batch = fabric.to_device(batch)  # images and the lists of target masks / classes
                step = state["step"]
                probs = annealing_probabilities(step, starts, ends, t.annealing_power)
                model.attn_mask_probs.copy_(torch.tensor(probs))
                set_learning_rates(optimizer, t.lr, schedule, step)
                accumulating = (micro + 1) % t.accumulate != 0
                with fabric.no_backward_sync(wrapped, enabled=accumulating):
                    out = wrapped(batch["pixel_values"], mask_labels=batch["mask_labels"],
                                  class_labels=batch["class_labels"])
                    loss = out.loss
                    if not torch.isfinite(loss):
                        raise TrainingError(f"loss became {loss.item()} at step {step}; training stopped, the last "
                                            f"good checkpoint is {self.out / 'last.ckpt'} (try a lower train.lr)")
                    fabric.backward(loss / t.accumulate)
                micro += 1
                state["batch"] += 1
                if accumulating:
                    continue
                if t.grad_clip:
                    fabric.clip_gradients(wrapped, optimizer, max_norm=t.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                bar.update(1)
                record = {"loss": loss.item(), **{k: v.item() for k, v in out.loss_dict.items()},
                          "lr": optimizer.param_groups[-1]["lr"]}
                history.append({"step": step, **record, "mask_probs": probs,
                                "lrs": {g["name"]: g["lr"] for g in optimizer.param_groups}})
                if state["step"] % t.log_every == 0 or state["step"] == total:
                    self._log({f"train/{k}": v for k, v in record.items()}, state["step"])
                    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}")
                if t.eval_every and state["step"] % t.eval_every == 0:
                    self._evaluate(model, state)
                if t.checkpoint_every and state["step"] % t.checkpoint_every == 0:
                    self._save("last.ckpt", state)
                if stop is not None and stop.requested:
                    self._stop(state, stop, bar)
                if state["step"] >= total:
                    break
            else:  # the epoch ran out
                state["epoch"] += 1
                state["batch"] = 0
                if not t.eval_every:
                    self._evaluate(model, state)
                if not t.checkpoint_every:
                    self._save("last.ckpt", state)
                continue
            break
        # The final model is always scored. Not yet with several processes: rank 0 evaluates alone and the
        # metric's all-reduce would wait for the others (a known limitation of _evaluate under DDP).
        if state["step"] >= self._run_total and self._evaluated_at != state["step"] and fabric.world_size == 1:
            self._evaluate(model, state)
        bar.close()
        for logger in fabric.loggers:  # flush the CSV / TensorBoard logs
            logger.finalize("success")
        if self.wandb is not None:
            self.wandb.finish()
        self._save("last.ckpt", state)
        ran = state["step"] - first
        since = f" (steps {first + 1}..{state['step']}, resumed)" if first else ""
        fabric.print(f"trained {ran} steps{since} in {time.perf_counter() - started:.0f} s")
        return history

    def _stop(self, state, stop: StopFlag, bar) -> None:
        """A signal arrived: checkpoint the step just finished and leave; `--resume` redoes no step."""
        bar.close()
        path = self._save("last.ckpt", state)
        for logger in self.fabric.loggers:
            logger.finalize("interrupted")
        raise TrainingInterrupted(f"stopped by {stop.signal} after step {state['step']}; {path} holds that step, "
                                  "continue with `resume=True`")

    def _log(self, values: dict[str, float], step: int) -> None:
        self.fabric.log_dict(values, step=step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def _evaluate(self, model, state) -> None:
        """Score the validation split with the task's metric; keep `best.ckpt` by that metric."""
        from ..evaluation.runner import evaluate
        from ..predictor import Segmenter
        self._evaluated_at = state["step"]
        val = self._validation()
        if val is None or not self.fabric.is_global_zero:
            self.fabric.barrier()
            return
        task = val.info.task
        was_training = model.training
        segmenter = Segmenter(model.eval(), self._processor(val.info), task,
                              stuff_classes=sorted(val.info.stuff_classes))
        result = evaluate(segmenter, self.recipe.data.path, self.recipe.data.dataset,
                          split=self.recipe.data.val_split, limit=self.recipe.train.eval_limit, progress=False)
        model.train(was_training)
        key = {"semantic": "mIoU", "panoptic": "PQ", "instance": "AP"}[task]
        score = result["metrics"][key]
        scored = {"images": result["num_images"], "of": len(val)}  # train.eval_limit may leave some out
        self._log({f"val/{key}": score, "val/images": scored["images"]}, state["step"])
        self.fabric.print(f"step {state['step']}: val {key} {score:.2f} {scored_on(scored)}")
        if math.isfinite(score) and (state["best"] is None or score > state["best"]["score"]):
            state["best"] = {"score": score, "metric": key, "step": state["step"], **scored}
            with atomic_path(self.out / "best.ckpt") as tmp:
                torch.save({"model": model.state_dict(), "best": state["best"], "config": state["config"],
                            "processor": state["processor"]}, tmp)
        self.fabric.barrier()

    def _processor(self, info):
        """The inference processor of the dataset's task at the crop size (sliding window for semantic);
        it records the task and stuff classes, which `Segmenter.from_pretrained` reads back."""
        from ..processing.image_processor import EomtImageProcessor

        crop = self.recipe.data.crop_size
        semantic = info.task == "semantic"
        size = {"shortest_edge": crop} if semantic else {"shortest_edge": crop, "longest_edge": crop}
        return EomtImageProcessor(size=size, do_split_image=semantic,
                                  do_pad=not semantic, task=info.task, stuff_classes=sorted(info.stuff_classes))

    def _export(self, model, directory: Path, info) -> None:
        """The final model in transformers format, with the processor for its task."""
        model.save_pretrained(directory)
        self._processor(info).save_pretrained(directory)
        write_json_atomic(directory / "recipe.json", self.recipe.to_dict(), indent=2)


def _is_exported(final: Path) -> bool:
    """`final/` holds a whole exported model (what `_export` writes)."""
    return all((final / name).is_file() for name in ("config.json", "model.safetensors", "preprocessor_config.json"))


def _tensorboard_logger(out: Path):
    try:
        from lightning_fabric.loggers import TensorBoardLogger

        return TensorBoardLogger(str(out), name="tensorboard")
    except (ImportError, ModuleNotFoundError, RuntimeError):
        return None
