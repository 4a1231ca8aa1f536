"""Training data: a torch Dataset of augmented, normalised samples over an `eomt.data` reader, and its loader.

Each item's augmentation comes from its own `torch.Generator`, seeded from (seed, epoch, index) only, so an
item is the same whichever worker loads it, in whatever order, and a resumed run sees the same data as an
uninterrupted one. The loader's shuffling depends only on (seed, epoch) as well (`EpochShuffleSampler`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler
from torchvision.transforms.v2 import functional as F

from eomt.data.sample import DatasetError, Sample
from eomt.processing.image_processor import IMAGENET_MEAN, IMAGENET_STD

_MAX_COUNTER_SLOTS = 257  # slot 0: the main process; 1..256: DataLoader workers (id modulo 256)
_ITEM_STREAM = 1
_SHUFFLE_STREAM = 2


def _derived_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from a tuple of non-negative integers."""
    state = np.random.SeedSequence([int(v) for v in values]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def normalize(image: Tensor) -> Tensor:
    """uint8 (3, H, W) -> float32 (x / 255 - ImageNet mean) / ImageNet std."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return (image.to(torch.float32) / 255.0 - mean) / std


class TrainingDataset(torch.utils.data.Dataset):
    """Augmented training items from an `eomt.data` Dataset (anything whose ``[i]`` gives a `Sample`).

    For index i, item ``[i]``:

    - reads the sample, checks every label is in [0, num_classes) (a `DatasetError` naming the image file
      and the value otherwise) and drops crowd segments when `drop_crowd`;
    - when the transform leaves no mask, augments the same image again with the generator's next numbers
      (as the authors do), up to `max_reaugment` times; when no segment is left before augmenting (or the
      re-augmentations all came out empty), draws another index uniformly from the item's generator and
      tries that one (both counted in `stats`); `max_resample` images in a row without a mask raise a
      `DatasetError`;
    - returns ``{"pixel_values": float32 (3, S, S) ImageNet-normalised, "mask_labels": float32 (M, S, S),
      "class_labels": int64 (M,), "index": int}``, M >= 1, `index` being the dataset index of the sample
      actually used (i itself unless it was resampled).

    The transform is called as ``transform(image uint8 (3, H, W), masks bool (N, H, W), labels (N,),
    generator)`` (see `eomt.training.augment.TrainTransform`); its generator is seeded from (seed, epoch, i)
    alone. Call `set_epoch` before iterating a loader for each epoch: the epoch lives in shared memory, so
    DataLoader workers (persistent or not) see the new value. The skip counters are shared the same way,
    one slot per worker, so `stats` in the main process adds up what every worker skipped.
    """

    def __init__(self, dataset: Sequence[Sample], transform: Any, num_classes: int, drop_crowd: bool = True,
                 max_resample: int = 20, seed: int = 0, max_reaugment: int = 100):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if int(max_resample) < 1:
            raise ValueError(f"max_resample must be at least 1, got {max_resample}")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if len(dataset) == 0:
            raise ValueError("the training dataset has no images")
        self.dataset = dataset
        self.transform = transform
        self.num_classes = int(num_classes)
        self.drop_crowd = bool(drop_crowd)
        self.max_resample = int(max_resample)
        if int(max_reaugment) < 1:
            raise ValueError(f"max_reaugment must be at least 1, got {max_reaugment}")
        self.max_reaugment = int(max_reaugment)
        self.seed = int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        # columns: samples without annotations (after dropping crowd), samples left empty by the transform
        self._counts = torch.zeros((_MAX_COUNTER_SLOTS, 2), dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} images, {self.num_classes} classes, seed={self.seed}, "
                f"epoch={self.epoch}, transform={self.transform!r})")

    # ------------------------------------------------------------------------------------------ epoch, rng

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations (and loader order) the next iteration produces."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self._epoch.fill_(int(epoch))

    def generator(self, index: int, epoch: int | None = None) -> torch.Generator:
        """The generator item `index` of `epoch` (default: the current one) is augmented with."""
        epoch = self.epoch if epoch is None else int(epoch)
        return torch.Generator().manual_seed(_derived_seed(_ITEM_STREAM, self.seed, epoch, index))

    # ---------------------------------------------------------------------------------------------- stats

    @property
    def stats(self) -> dict[str, int]:
        """Skipped samples so far, summed over the main process and all loader workers."""
        no_annotations, empty = (int(v) for v in self._counts.sum(dim=0))
        return {"no_annotations": no_annotations, "empty_after_augment": empty, "skipped": no_annotations + empty}

    @property
    def skipped(self) -> int:
        return self.stats["skipped"]

    def reset_stats(self) -> None:
        self._counts.zero_()

    def _count(self, column: int) -> None:
        info = torch.utils.data.get_worker_info()
        slot = 0 if info is None else 1 + info.id % (_MAX_COUNTER_SLOTS - 1)
        self._counts[slot, column] += 1

    # ---------------------------------------------------------------------------------------------- items

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.dataset)
        index = int(index)
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for a training set of {n} images")
        generator = self.generator(index)
        current = index
        empty_in_row = 0
        while True:
            item = self._attempt(current, generator)
            if item is not None:
                return item
            empty_in_row += 1
            if empty_in_row >= self.max_resample:
                raise DatasetError(f"{empty_in_row} samples in a row had no mask to train on (first index {index}, "
                                   f"last {current}: {self._file_name(current)}); check the annotations, the "
                                   f"crowd flags and the scale range")
            current = int(torch.randint(n, (), generator=generator))

    def _attempt(self, index: int, generator: torch.Generator) -> dict[str, Any] | None:
        sample = self.dataset[index]
        labels = torch.as_tensor(sample.labels).to(torch.int64)
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.numel():
            raise DatasetError(f"{sample.file_name}: class label {int(bad[0])} is outside [0, {self.num_classes}) "
                               f"(training index {index})")
        masks = torch.as_tensor(sample.masks).to(torch.bool)
        if self.drop_crowd:
            keep = ~torch.as_tensor(sample.iscrowd).to(torch.bool)
            masks, labels = masks[keep], labels[keep]
        if masks.shape[0] == 0:
            self._count(0)
            return None
        image = F.pil_to_tensor(sample.image.convert("RGB"))
        for _ in range(self.max_reaugment):
            out_image, out_masks, out_labels = self.transform(image, masks, labels, generator)
            if out_masks.shape[0] > 0:
                return {"pixel_values": normalize(out_image), "mask_labels": out_masks.to(torch.float32),
                        "class_labels": out_labels.to(torch.int64), "index": index}
            self._count(1)
        return None

    def _file_name(self, index: int) -> str:
        try:
            return str(self.dataset.file_name(index))  # type: ignore[attr-defined]
        except Exception:  # readers have file_name(); a plain sequence of samples may not
            return f"index {index}"


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack `pixel_values` to (B, 3, S, S) and `index` to (B,) int64; `mask_labels` and `class_labels` stay
    lists, one (M_i, S, S) / (M_i,) tensor per image (images have different numbers of masks)."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    return {
        "pixel_values": torch.stack([item["pixel_values"] for item in batch]),
        "mask_labels": [item["mask_labels"] for item in batch],
        "class_labels": [item["class_labels"] for item in batch],
        "index": torch.tensor([int(item["index"]) for item in batch], dtype=torch.int64),
    }


class EpochShuffleSampler(Sampler[int]):
    """Indices in an order that depends only on (seed, the dataset's current epoch), sharded across processes.

    With `shuffle` a random permutation drawn from a generator seeded from (seed, epoch); without, in order.
    The epoch is read from ``dataset.epoch`` each time iteration starts, so `TrainingDataset.set_epoch`
    drives both the augmentation and the order. Process `rank` of `world_size` takes every world_size-th
    index (all processes the same count); `start` skips that many of them, to resume mid-epoch.
    """

    def __init__(self, dataset: TrainingDataset, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.start = 0

    def per_rank(self) -> int:
        return len(self.dataset) // self.world_size

    def __len__(self) -> int:
        return max(0, self.per_rank() - self.start)

    def order(self, epoch: int) -> list[int]:
        n = len(self.dataset)
        if not self.shuffle:
            return list(range(n))
        generator = torch.Generator().manual_seed(_derived_seed(_SHUFFLE_STREAM, self.seed, epoch))
        return torch.randperm(n, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self.order(int(getattr(self.dataset, "epoch", 0)))
        mine = order[self.rank: self.per_rank() * self.world_size: self.world_size]
        return iter(mine[self.start:])


def build_loader(train_dataset: TrainingDataset, batch_size: int, num_workers: int, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = True, pin_memory: bool | None = None, rank: int = 0,
                 world_size: int = 1) -> DataLoader:
    """A DataLoader over `train_dataset` batching with `collate`.

    Order: `EpochShuffleSampler` (a permutation seeded from (seed, epoch) when `shuffle`); the DataLoader also
    gets a generator seeded with `seed` (it only seeds the workers' base RNG; augmentations use per-item
    generators). Workers are persistent when `num_workers` > 0. `pin_memory` defaults to whether CUDA is
    available. Call ``train_dataset.set_epoch(e)`` before ``iter(loader)`` for each epoch. With several
    processes, each passes its `rank` and the `world_size`; ``loader.sampler.start`` resumes mid-epoch.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if int(num_workers) < 0:
        raise ValueError(f"num_workers must be non-negative, got {num_workers}")
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return DataLoader(
        train_dataset,
        batch_size=int(batch_size),
        sampler=EpochShuffleSampler(train_dataset, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size),
        num_workers=int(num_workers),
        collate_fn=collate,
        pin_memory=bool(pin_memory),
        drop_last=bool(drop_last),
        generator=torch.Generator().manual_seed(int(seed)),
        persistent_workers=int(num_workers) > 0,
    )
