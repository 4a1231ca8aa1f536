"""Instance masks stored compactly: per instance a tight bool crop and where it lies in the image.

N full-size (H, W) masks are N x pixels bytes (a 12 MP photo with 100 instances: 1.2 GB); an instance covers a
small box of the image, so a crop + its offset holds the same mask in a fraction of that. `InstanceMasks`
reads as the (N, H, W) stack where one is needed (`dense()`, indexing one mask), and gives what the
writers need without it: areas, COCO boxes, COCO RLEs (made from the crops' column runs, identical to
`pycocotools.mask.encode` of the full mask) and the last-instance-covering map.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["InstanceMasks", "tight_crop"]


def tight_crop(mask: torch.Tensor) -> tuple[int, int, torch.Tensor]:
    """(top, left, crop) of a (h, w) bool mask: the smallest box holding every True pixel (empty: 0, 0, 0x0)."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    if rows.numel() == 0:
        return 0, 0, torch.zeros((0, 0), dtype=torch.bool)
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return y0, x0, mask[y0:y1, x0:x1].to("cpu", copy=True)


class InstanceMasks(Sequence):
    """N instance masks of an (height, width) image as tight crops: `crops[i]` (h_i, w_i) bool at
    `offsets[i]` = (top, left). An empty mask is a 0 x 0 crop at (0, 0)."""

    def __init__(self, height: int, width: int, crops: Sequence[torch.Tensor] = (),
                 offsets: Sequence[tuple[int, int]] = ()) -> None:
        if len(crops) != len(offsets):
            raise ValueError(f"{len(crops)} crops but {len(offsets)} offsets")
        self.height, self.width = int(height), int(width)
        self.crops = [c.to(torch.bool) for c in crops]
        self.offsets = [(int(t), int(left)) for t, left in offsets]
        for crop, (top, left) in zip(self.crops, self.offsets, strict=True):
            if crop.dim() != 2 or top < 0 or left < 0 or top + crop.shape[0] > self.height or (
                    left + crop.shape[1] > self.width):
                raise ValueError(f"a crop of shape {tuple(crop.shape)} at ({top}, {left}) does not fit a "
                                 f"{self.height}x{self.width} image")
        self._dense: torch.Tensor | None = None

    @classmethod
    def from_dense(cls, masks: torch.Tensor | np.ndarray) -> InstanceMasks:
        """From an (N, H, W) stack (nonzero = mask)."""
        masks = torch.as_tensor(masks)
        if masks.dim() != 3:
            raise ValueError(f"masks must have shape (N, H, W), got {tuple(masks.shape)}")
        masks = masks if masks.dtype == torch.bool else masks != 0
        out = cls(masks.shape[1], masks.shape[2])
        for mask in masks:
            out.append(mask)
        return out

    def append(self, mask: torch.Tensor, top: int = 0, left: int = 0) -> None:
        """Add one mask: a (h, w) bool tensor lying at (top, left) of the image (the full mask: 0, 0)."""
        y0, x0, crop = tight_crop(mask)
        if crop.numel() == 0:
            y0, x0, top, left = 0, 0, 0, 0
        self.crops.append(crop)
        self.offsets.append((top + y0, left + x0))
        self._dense = None

    # ---- the stack API ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.crops), self.height, self.width

    def mask(self, index: int) -> torch.Tensor:
        """Instance `index` as a full (H, W) bool mask."""
        out = torch.zeros((self.height, self.width), dtype=torch.bool)
        crop, (top, left) = self.crops[index], self.offsets[index]
        out[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
        return out

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            picked = range(len(self))[index]
            return InstanceMasks(self.height, self.width, [self.crops[i] for i in picked],
                                 [self.offsets[i] for i in picked])
        return self.mask(range(len(self))[index])

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self.mask(i) for i in range(len(self)))

    def dense(self) -> torch.Tensor:
        """The (N, H, W) bool stack (built once, on first use)."""
        if self._dense is None:
            out = np.zeros(self.shape, dtype=bool)
            for i, (crop, (top, left)) in enumerate(zip(self.crops, self.offsets, strict=True)):
                out[i, top:top + crop.shape[0], left:left + crop.shape[1]] = crop.cpu().numpy()
            self._dense = torch.from_numpy(out)  # numpy copies: one thread, no wake-up of torch's pool per mask
        return self._dense

    # ---- what the writers need ----------------------------------------------------------------------------

    def areas(self) -> list[int]:
        return [int(c.sum()) for c in self.crops]

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """(top, left, bottom, right) of each crop; an empty mask has (0, 0, 0, 0)."""
        return [(t, left, t + c.shape[0], left + c.shape[1]) for c, (t, left) in zip(self.crops, self.offsets,
                                                                                     strict=True)]

    def coco_boxes(self) -> list[list[float]]:
        """COCO [x, y, w, h] per mask (tight; [0, 0, 0, 0] when empty)."""
        return [[float(left), float(t), float(r - left), float(b - t)] if b > t else [0.0, 0.0, 0.0, 0.0]
                for t, left, b, r in self.boxes()]

    def raw_rles(self) -> list[dict]:
        """pycocotools compressed RLEs (bytes counts), equal to `mask_utils.encode` of each full mask.

        The full mask in column-major order is: `left * H` zeros, then for each crop column the rows above
        it (zeros), the column, the rows below (zeros), then zeros to the end; its runs are computed from
        the crop's columns padded to the image height only (w_i x H bytes at a time)."""
        from pycocotools import mask as mask_utils  # only RLE output needs pycocotools

        out = []
        h, total = self.height, self.height * self.width
        for crop, (top, left) in zip(self.crops, self.offsets, strict=True):
            if crop.numel() == 0:
                counts = [total]
            else:
                strip = np.zeros((crop.shape[1], h), dtype=np.bool_)  # (columns, rows): column-major
                strip[:, top:top + crop.shape[0]] = crop.numpy().T
                flat = strip.ravel()
                change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
                edges = np.concatenate(([0], change, [flat.size]))
                runs = np.diff(edges)
                start = left * h
                if flat[0]:  # RLE counts begin with a run of zeros
                    counts = [start, *runs.tolist()]
                else:
                    counts = [start + int(runs[0]), *runs[1:].tolist()]
                tail = total - start - flat.size
                if flat[-1]:
                    counts.append(tail)
                else:
                    counts[-1] += tail
                if counts[-1] == 0 and len(counts) > 1:
                    counts.pop()
            out.append(mask_utils.frPyObjects({"size": [h, self.width], "counts": counts}, h, self.width))
        return out

    def last_covering(self) -> torch.Tensor:
        """(H, W) int64: the index of the last instance covering each pixel, -1 where none does."""
        out = np.full((self.height, self.width), -1, dtype=np.int64)
        for i, (crop, (top, left)) in enumerate(zip(self.crops, self.offsets, strict=True)):
            if crop.numel():  # numpy: one thread, no wake-up of torch's pool per mask
                np.copyto(out[top:top + crop.shape[0], left:left + crop.shape[1]], i, where=crop.cpu().numpy())
        return torch.from_numpy(out)

    def __repr__(self) -> str:
        return f"InstanceMasks({len(self)} masks of {self.height}x{self.width})"
