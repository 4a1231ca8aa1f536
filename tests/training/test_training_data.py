"""TrainingDataset, collate and build_loader: targets, skipping, errors, per-item RNG and worker invariance."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from eomt.data import DatasetError, open_dataset
from eomt.data.sample import DatasetInfo, Sample
from eomt.training.augment import AugmentConfig, TrainTransform
from eomt.training.data import EpochShuffleSampler, TrainingDataset, build_loader, collate, normalize

S = 16


class FakeDataset:
    """An in-memory stand-in for an eomt.data reader."""

    def __init__(self, samples: list[Sample], num_classes: int = 3):
        self.samples = samples
        self.info = DatasetInfo(name="fake", task="panoptic", class_names=[f"c{i}" for i in range(num_classes)])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def file_name(self, i: int) -> str:
        return self.samples[i].file_name


def make_sample(i: int, labels: list[int], crowd: list[bool] | None = None, height: int = 20, width: int = 24,
                seed: int | None = None) -> Sample:
    rng = np.random.default_rng(i if seed is None else seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    n = len(labels)
    masks = torch.zeros(n, height, width, dtype=torch.bool)
    for k in range(n):  # vertical stripes, one per segment
        masks[k, :, k * width // n:(k + 1) * width // n] = True
    crowd = crowd if crowd is not None else [False] * n
    return Sample(image_id=i, file_name=f"img_{i:03d}.jpg", image=image, masks=masks,
                  labels=torch.tensor(labels, dtype=torch.int64), iscrowd=torch.tensor(crowd, dtype=torch.bool))


def fake_dataset(n: int = 10) -> FakeDataset:
    return FakeDataset([make_sample(i, [i % 3, (i + 1) % 3][: 1 + i % 2]) for i in range(n)])


def transform(**overrides) -> TrainTransform:
    return TrainTransform(AugmentConfig(**{"crop_size": S, "scale_range": (0.5, 2.0), **overrides}))


def identity_transform() -> TrainTransform:
    return transform(scale_range=(1.0, 1.0), flip_prob=0.0)


def same_item(a: dict, b: dict) -> bool:
    return (a["index"] == b["index"] and torch.equal(a["pixel_values"], b["pixel_values"])
            and torch.equal(a["mask_labels"], b["mask_labels"]) and torch.equal(a["class_labels"], b["class_labels"]))


def test_item_format_and_normalisation():
    sample = make_sample(0, [2, 0], height=S, width=S)
    ds = TrainingDataset(FakeDataset([sample]), identity_transform(), num_classes=3)
    item = ds[0]
    assert set(item) == {"pixel_values", "mask_labels", "class_labels", "index"}
    assert item["pixel_values"].shape == (3, S, S) and item["pixel_values"].dtype == torch.float32
    image = torch.from_numpy(np.array(sample.image)).permute(2, 0, 1)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (image.float() / 255 - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(item["pixel_values"], expected, atol=1e-6)
    assert torch.equal(normalize(image), item["pixel_values"])
    assert item["mask_labels"].dtype == torch.float32 and torch.equal(item["mask_labels"], sample.masks.float())
    assert item["class_labels"].dtype == torch.int64 and item["class_labels"].tolist() == [2, 0]
    assert item["index"] == 0 and ds.stats["skipped"] == 0


def test_crowd_segments_are_dropped():
    sample = make_sample(0, [0, 1, 2], crowd=[False, True, False], height=S, width=S)
    item = TrainingDataset(FakeDataset([sample]), identity_transform(), num_classes=3)[0]
    assert item["class_labels"].tolist() == [0, 2]
    assert torch.equal(item["mask_labels"], sample.masks[[0, 2]].float())
    kept = TrainingDataset(FakeDataset([sample]), identity_transform(), num_classes=3, drop_crowd=False)[0]
    assert kept["class_labels"].tolist() == [0, 1, 2]


@pytest.mark.parametrize("empty", [make_sample(0, []), make_sample(0, [1], crowd=[True])],
                         ids=["no annotations", "crowd only"])
def test_samples_without_annotations_are_resampled_and_counted(empty):
    ds = TrainingDataset(FakeDataset([empty, make_sample(1, [1])]), transform(), num_classes=3)
    item = ds[0]
    assert item["index"] == 1 and item["class_labels"].tolist() == [1]
    assert ds.stats["no_annotations"] >= 1 and ds.stats["empty_after_augment"] == 0
    assert ds.skipped == ds.stats["no_annotations"]
    ds.reset_stats()
    assert ds.stats == {"no_annotations": 0, "empty_after_augment": 0, "skipped": 0}
    assert same_item(ds[0], item)  # the resampling is deterministic too


def test_a_crop_left_empty_re_augments_the_same_image_as_the_authors():
    calls = []

    def drop_first(image, masks, labels, generator):
        calls.append((image.clone(), generator.get_state()))
        out = transform()(image, masks, labels, generator)
        return out if len(calls) > 1 else (out[0], out[1][:0], out[2][:0])

    ds = TrainingDataset(fake_dataset(4), drop_first, num_classes=3)
    item = ds[2]
    assert item["index"] == 2 and item["class_labels"].numel() >= 1  # the same image, not another one
    assert len(calls) == 2 and torch.equal(calls[0][0], calls[1][0])
    assert not torch.equal(calls[0][1], calls[1][1])  # with the generator's next numbers
    assert ds.stats == {"no_annotations": 0, "empty_after_augment": 1, "skipped": 1}


def test_an_image_that_stays_empty_after_max_reaugment_tries_gives_way_to_another():
    def empty_for_image_0(image, masks, labels, generator):
        out = transform()(image, masks, labels, generator)
        return (out[0], out[1][:0], out[2][:0]) if labels.tolist() == [0] else out

    samples = [make_sample(0, [0]), make_sample(1, [1])]
    ds = TrainingDataset(FakeDataset(samples), empty_for_image_0, num_classes=3, max_reaugment=3)
    assert ds[0]["index"] == 1
    assert ds.stats["empty_after_augment"] % 3 == 0 and ds.stats["empty_after_augment"] >= 3


@pytest.mark.parametrize("label", [3, -1])
def test_label_out_of_range_is_a_one_line_error_naming_the_file(label):
    ds = TrainingDataset(FakeDataset([make_sample(0, [0]), make_sample(7, [1, label])]), transform(), num_classes=3)
    ds[0]
    with pytest.raises(DatasetError) as error:
        ds[1]
    message = str(error.value)
    assert "img_007.jpg" in message and str(label) in message and "\n" not in message


def test_too_many_empty_samples_in_a_row_raise():
    ds = TrainingDataset(FakeDataset([make_sample(i, []) for i in range(3)]), transform(), num_classes=3,
                         max_resample=5)
    with pytest.raises(DatasetError, match="5 samples in a row") as error:
        ds[0]
    assert "\n" not in str(error.value)
    assert ds.stats["no_annotations"] == 5


def test_item_depends_only_on_seed_epoch_and_index():
    ds = TrainingDataset(fake_dataset(), transform(photometric=True), num_classes=3, seed=7)
    forward = [ds[i] for i in range(len(ds))]
    backward = [ds[i] for i in reversed(range(len(ds)))][::-1]
    assert all(same_item(a, b) for a, b in zip(forward, backward, strict=True))
    again = TrainingDataset(fake_dataset(), transform(photometric=True), num_classes=3, seed=7)
    assert all(same_item(a, again[i]) for i, a in enumerate(forward))
    ds.set_epoch(1)
    assert ds.epoch == 1
    assert not all(same_item(a, ds[i]) for i, a in enumerate(forward))
    ds.set_epoch(0)
    assert all(same_item(a, ds[i]) for i, a in enumerate(forward))
    other_seed = TrainingDataset(fake_dataset(), transform(photometric=True), num_classes=3, seed=8)
    assert not all(same_item(a, other_seed[i]) for i, a in enumerate(forward))


def test_collate_keeps_variable_mask_counts():
    ds = TrainingDataset(fake_dataset(), identity_transform(), num_classes=3)
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["pixel_values"].shape == (3, 3, S, S)
    assert [m.shape[0] for m in batch["mask_labels"]] == [1, 2, 1]
    assert [c.tolist() for c in batch["class_labels"]] == [[0], [1, 2], [2]]
    assert all(m.shape[0] == c.shape[0] for m, c in zip(batch["mask_labels"], batch["class_labels"], strict=True))
    assert batch["index"].tolist() == [0, 1, 2] and batch["index"].dtype == torch.int64


def test_sampler_order_depends_on_seed_and_epoch():
    ds = TrainingDataset(fake_dataset(20), transform(), num_classes=3)
    sampler = EpochShuffleSampler(ds, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(20)) and first != list(range(20))
    assert list(EpochShuffleSampler(ds, seed=1)) == first and list(EpochShuffleSampler(ds, seed=2)) != first
    ds.set_epoch(3)
    assert list(sampler) != first and list(sampler) == sampler.order(3)
    assert list(EpochShuffleSampler(ds, shuffle=False)) == list(range(20))


def epochs_of_batches(loader, ds, epochs=2):
    out = []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        out.append(list(loader))
    return out


def test_loader_with_workers_matches_single_process():
    samples = [make_sample(i, [i % 3, (i + 1) % 3][: 1 + i % 2]) for i in range(11)]
    samples[4] = make_sample(4, [])  # skipped, in whichever process loads it
    results, stats = [], []
    for workers in (0, 2):
        ds = TrainingDataset(FakeDataset(samples), transform(photometric=True), num_classes=3, seed=3)
        loader = build_loader(ds, batch_size=4, num_workers=workers, seed=5, pin_memory=False)
        assert loader.drop_last and (loader.persistent_workers == (workers > 0))
        results.append(epochs_of_batches(loader, ds))
        stats.append(ds.stats)
    single, multi = results
    assert [len(epoch) for epoch in single] == [2, 2]
    assert single[0][0]["index"].tolist() != single[1][0]["index"].tolist()  # reshuffled per epoch
    for epoch_a, epoch_b in zip(single, multi, strict=True):
        for a, b in zip(epoch_a, epoch_b, strict=True):
            assert torch.equal(a["index"], b["index"]) and torch.equal(a["pixel_values"], b["pixel_values"])
            for key in ("mask_labels", "class_labels"):
                assert all(torch.equal(x, y) for x, y in zip(a[key], b[key], strict=True))
    assert stats[0] == stats[1]


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_over_a_coco_panoptic_folder(tmp_path):
    """A two-image COCO panoptic train split: crowd dropped, an unannotated image skipped, workers agree."""
    height, width = 20, 28
    ids = np.zeros((height, width), np.int64)
    ids[:, :14], ids[:8, 14:], ids[8:, 14:] = 1, 2, 3
    categories = [{"id": 5, "name": "dog", "isthing": 1}, {"id": 9, "name": "sky", "isthing": 0}]
    images = [{"id": 1, "file_name": "a.jpg", "height": height, "width": width},
              {"id": 2, "file_name": "b.jpg", "height": height, "width": width}]
    doc = {"images": images, "categories": categories, "annotations": [
        {"image_id": 1, "file_name": "a.png", "segments_info": [
            {"id": 1, "category_id": 5, "iscrowd": 0}, {"id": 2, "category_id": 5, "iscrowd": 1},
            {"id": 3, "category_id": 9, "iscrowd": 0}]},
        {"image_id": 2, "file_name": "b.png", "segments_info": []}]}
    (tmp_path / "annotations" / "panoptic_train2017").mkdir(parents=True)
    (tmp_path / "train2017").mkdir()
    (tmp_path / "annotations" / "panoptic_train2017.json").write_text(json.dumps(doc))
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    (tmp_path / "annotations" / "panoptic_train2017" / "a.png").write_bytes(png(rgb))
    (tmp_path / "annotations" / "panoptic_train2017" / "b.png").write_bytes(png(np.zeros_like(rgb)))
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (width, height), (90, 120, 150)).save(tmp_path / "train2017" / name)
    reader = open_dataset("coco_panoptic", tmp_path, split="train")
    ds = TrainingDataset(reader, transform(scale_range=(1.0, 1.0)), num_classes=reader.info.num_classes)
    item = ds[1]
    assert item["index"] == 0 and ds.stats["no_annotations"] >= 1
    assert sorted(item["class_labels"].tolist()) == [0, 1]  # dog (non-crowd) and sky; the crowd dog is gone
    ds.reset_stats()
    batches = [list(build_loader(ds, batch_size=2, num_workers=w, seed=0, pin_memory=False)) for w in (0, 2)]
    assert len(batches[0]) == len(batches[1]) == 1
    assert torch.equal(batches[0][0]["pixel_values"], batches[1][0]["pixel_values"])
    assert batches[0][0]["index"].tolist() == [0, 0]
    small = TrainingDataset(reader, transform(), num_classes=1)
    with pytest.raises(DatasetError, match=r"a\.jpg: class label 1"):
        small[0]


def test_argument_validation():
    with pytest.raises(ValueError, match="max_resample"):
        TrainingDataset(fake_dataset(), transform(), num_classes=3, max_resample=0)
    with pytest.raises(ValueError, match="no images"):
        TrainingDataset(FakeDataset([]), transform(), num_classes=3)
    with pytest.raises(IndexError):
        TrainingDataset(fake_dataset(), transform(), num_classes=3)[10]
