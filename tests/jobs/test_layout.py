"""Output names: every input image gets its own files, the same plan in every process, disjoint shards."""

from __future__ import annotations

from pathlib import Path

from eomt.jobs.layout import collect_images, plan_outputs, shard


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def _names(sources: list[str]) -> dict[str, str]:
    images, problems = collect_images(sources)
    assert not problems
    return {Path(p.path).as_posix(): p.name for p in plan_outputs(images)}


def test_files_from_different_folders_with_one_name_get_one_folder_each(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path, "a/IMG_1.jpg", "b/IMG_1.jpg", "b/deep/IMG_1.jpg")
    assert _names(["a/IMG_1.jpg", "b/IMG_1.jpg"]) == {"a/IMG_1.jpg": "a/IMG_1", "b/IMG_1.jpg": "b/IMG_1"}
    assert _names(["a", "b"]) == {"a/IMG_1.jpg": "a/IMG_1", "b/IMG_1.jpg": "b/IMG_1",
                                  "b/deep/IMG_1.jpg": "b/deep/IMG_1"}
    # a folder mirrors its own layout; a glob is rooted before its first wildcard
    assert _names(["b"]) == {"b/IMG_1.jpg": "IMG_1", "b/deep/IMG_1.jpg": "deep/IMG_1"}
    assert _names(["b/**/*.jpg"]) == {"b/IMG_1.jpg": "IMG_1", "b/deep/IMG_1.jpg": "deep/IMG_1"}
    assert _names(["b/deep/IMG_1.jpg"]) == {"b/deep/IMG_1.jpg": "IMG_1"}


def test_same_stem_other_extension_and_case_and_reserved_names_never_collide(tmp_path):
    _touch(tmp_path, "x.jpg", "x.png", "x_jpg.png", "y.JPG", "y.jpeg", "summary.png")
    names = _names([str(tmp_path)])
    assert len(set(n.casefold() for n in names.values())) == len(names) == 6
    assert names[f"{tmp_path.as_posix()}/x.png"] == "x_png"
    assert names[f"{tmp_path.as_posix()}/summary.png"] == "summary_png"  # OUT/summary.json is the job's


def test_plan_is_sorted_and_shards_cover_it_once(tmp_path):
    _touch(tmp_path, *[f"{c}/{i}.png" for c in "ba" for i in range(7)])
    images, _ = collect_images([str(tmp_path / "b"), str(tmp_path / "a")])
    plan = plan_outputs(images)
    assert [p.name for p in plan] == sorted(p.name for p in plan)
    for world in (1, 2, 3, 5):
        shards = [shard(plan, rank, world) for rank in range(world)]
        assert sorted(p.name for s in shards for p in s) == [p.name for p in plan]
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
