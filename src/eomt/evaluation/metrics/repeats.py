"""Counting an image once when a padding sampler hands it out twice (to two processes, or to one).

`SemanticMetric.update(..., image_id=...)` and `PanopticMetric.update(..., image_id=...)` record what
each identified image changed in the metric's count tensors (only the entries it changed). A repeated id
in the same process is ignored at once; `sync()` gathers every process's ids, and before the counts are
summed each process takes back the images that a lower-ranked process also counted. Images given
without an id are always counted. (`InstanceMetric` keeps whole records per image and drops repeats
when it gathers them.)
"""

from __future__ import annotations

from collections.abc import Hashable

import torch
import torch.distributed as dist


class ImageContributions:
    """Per image id: (flat index, change) for each count tensor of a metric."""

    def __init__(self) -> None:
        self._changes: dict[Hashable, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def __contains__(self, image_id: Hashable) -> bool:
        return image_id in self._changes

    def reset(self) -> None:
        self._changes = {}

    def record(self, image_id: Hashable, before: list[torch.Tensor], after: list[torch.Tensor]) -> None:
        changes = []
        for old, new in zip(before, after, strict=True):
            diff = (new - old).reshape(-1)
            index = diff.nonzero().reshape(-1)
            changes.append((index, diff[index]))
        self._changes[image_id] = changes

    def drop_repeats_across_processes(self, state: list[torch.Tensor]) -> None:
        """Before the all-reduce: subtract this process's images that a lower-ranked process also holds."""
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, list(self._changes))
        earlier = {image_id for ids in gathered[: dist.get_rank()] for image_id in ids}
        for image_id in earlier & self._changes.keys():
            for tensor, (index, change) in zip(state, self._changes[image_id], strict=True):
                flat = tensor.view(-1)
                flat[index] = flat[index] - change
