"""One frame's VidEoMT logits -> its semantic, instance or panoptic segmentation, segments named by track id.

The rules are those of transformers' `VideomtVideoProcessor.post_process_*_segmentation` (5.24), frame by
frame, with one difference in naming: transformers numbers a frame's segments 0, 1, ... in query order,
which changes from frame to frame; here a segment's id is its query index, the track id, which a query
keeps for the whole video. A stuff class merged over its queries (`stuff_classes`, transformers'
`label_ids_to_fuse`) gets the id `num_queries + class id`, stable across frames too. Mapping the ids of
the segments listed, in order, to 0, 1, ... gives transformers' maps exactly.

Work differs where the result cannot: the queries a threshold drops (their class probability alone
already fails it: an instance score is at most its class probability) are never upsampled.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import Tensor

THRESHOLDS = {"instance": 0.5, "panoptic": 0.8}  # transformers' defaults


def _upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, h, w) -> (N, H, W), bilinear, align_corners=False (as transformers)."""
    if x.shape[0] == 0:
        return x.new_zeros((0, *size))
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def semantic_frame(mask_logits: Tensor, class_logits: Tensor, size: tuple[int, int]) -> Tensor:
    """(Q, h, w) and (Q, K + 1) -> (H, W) int64 class ids: argmax of the class-probability-weighted masks."""
    classes = class_logits.float().softmax(-1)[..., :-1]
    probs = mask_logits.float().sigmoid()
    scores = (classes.transpose(0, 1) @ probs.flatten(1)).reshape(classes.shape[-1], *probs.shape[-2:])
    return _upsample(scores, size).argmax(0)


def instance_frame(mask_logits: Tensor, class_logits: Tensor, size: tuple[int, int],
                   threshold: float = THRESHOLDS["instance"]) -> dict:
    """Every query whose score (class probability x mean mask probability inside its mask) reaches `threshold`
    and whose mask (logit > 0) is not empty, in query order.

    Returns {"segmentation": (H, W) int64 track ids (-1 none; a later query paints over an earlier one),
    "segments_info": [{"id": track id, "label_id", "score"}], "masks": (N, H, W) bool, whole and overlapping}.
    """
    class_probs = class_logits.float().softmax(-1)[..., :-1]
    scores, labels = class_probs.max(-1)
    candidates = torch.nonzero(scores >= threshold).flatten()
    logits = _upsample(mask_logits[candidates].float(), size)
    masks = logits > 0
    mask_scores = (logits.sigmoid().flatten(1) * masks.flatten(1)).sum(1) / (masks.flatten(1).sum(1) + 1e-6)
    final = scores[candidates] * mask_scores
    keep = masks.flatten(1).any(1) & (final >= threshold)
    segmentation = torch.full(size, -1, dtype=torch.long, device=mask_logits.device)
    segments, kept = [], []
    for i in torch.nonzero(keep).flatten().tolist():
        query = int(candidates[i])
        segmentation[masks[i]] = query
        segments.append({"id": query, "label_id": int(labels[query]), "score": round(float(final[i]), 6)})
        kept.append(i)
    return {"segmentation": segmentation, "segments_info": segments, "masks": masks[kept]}


def panoptic_frame(mask_logits: Tensor, class_logits: Tensor, size: tuple[int, int],
                   threshold: float = THRESHOLDS["panoptic"], mask_threshold: float = 0.5,
                   overlap_mask_area_threshold: float = 0.8, stuff_classes: Collection[int] | None = None) -> dict:
    """Queries that are not "no object" with class probability above `threshold` compete for pixels (score x mask
    probability); a query keeps its pixels where its own mask probability reaches `mask_threshold`, if that is
    more than `overlap_mask_area_threshold` of its mask. Queries of a class in `stuff_classes` merge into one
    segment per class, id `num_queries + class id`.

    Returns {"segmentation": (H, W) int64 segment ids (-1 void), "segments_info": [{"id", "label_id", "score",
    "query"}]} (for a merged stuff segment, score and query are those of its first query).
    """
    num_queries, num_labels = class_logits.shape[0], class_logits.shape[-1] - 1
    scores, labels = class_logits.float().softmax(-1).max(-1)
    kept = torch.nonzero(labels.ne(num_labels) & (scores > threshold)).flatten()
    segmentation = torch.full(size, -1, dtype=torch.long, device=mask_logits.device)
    segments: list[dict] = []
    if kept.numel() == 0:
        return {"segmentation": segmentation, "segments_info": segments}
    probs = _upsample(mask_logits[kept].float(), size).sigmoid()
    winner = (scores[kept][:, None, None] * probs).argmax(0)
    stuff = set(stuff_classes or ())
    merged: dict[int, int] = {}
    for i, query in enumerate(kept.tolist()):
        label = int(labels[query])
        won = winner == i
        own = probs[i] >= mask_threshold
        final = won & own
        won_area, own_area = won.sum(), own.sum()
        if not (won_area > 0 and own_area > 0 and final.any()):
            continue
        if not (won_area / own_area).item() > overlap_mask_area_threshold:  # float32, as transformers divides
            continue
        if label in stuff:
            if label in merged:
                segmentation[final] = merged[label]
                continue
            merged[label] = num_queries + label
        segment_id = merged.get(label, query) if label in stuff else query
        segmentation[final] = segment_id
        segments.append({"id": segment_id, "label_id": label, "score": round(float(scores[query]), 6),
                         "query": query})
    return {"segmentation": segmentation, "segments_info": segments}
