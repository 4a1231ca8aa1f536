"""The CPU cache size that sizes the bands of per-pixel work, read from a sysfs tree the test lays out."""

from __future__ import annotations

from eomt.processing import memory, postprocess


def cache_tree(root, sizes):
    for index, size in enumerate(sizes):
        folder = root / f"index{index}"
        folder.mkdir(parents=True)
        (folder / "size").write_text(f"{size}\n")
    return str(root)


def test_the_last_level_cache_is_the_largest_one_listed(tmp_path):
    root = cache_tree(tmp_path / "cache", ["48K", "32K", "1024K", "32768K"])
    assert memory.cpu_cache_bytes.__wrapped__(root) == 32 << 20
    assert memory.cpu_cache_bytes.__wrapped__(cache_tree(tmp_path / "m", ["2M", "8M"])) == 8 << 20


def test_an_unreadable_cache_tree_falls_back_to_the_default(tmp_path):
    assert memory.cpu_cache_bytes.__wrapped__(str(tmp_path / "missing")) == memory.DEFAULT_CACHE
    root = cache_tree(tmp_path / "odd", ["lots", ""])
    assert memory.cpu_cache_bytes.__wrapped__(root) == memory.DEFAULT_CACHE


def test_bands_fill_half_the_cache_with_at_least_two_grains_per_thread(monkeypatch):
    monkeypatch.setattr(postprocess.torch, "get_num_threads", lambda: 2)
    for cache, pixels in [(8 << 20, 1 << 17), (32 << 20, 1 << 19), (1 << 20, 1 << 17), (48 << 20, 1 << 19)]:
        monkeypatch.setattr(postprocess, "cpu_cache_bytes", lambda cache=cache: cache)
        assert postprocess._band_pixels() == pixels
    monkeypatch.setattr(postprocess.torch, "get_num_threads", lambda: 64)
    assert postprocess._band_pixels() == 2 * postprocess._GRAIN * 64
