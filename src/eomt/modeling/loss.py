"""Mask2Former-style set loss used by EoMT.

Each prediction level (every intermediate prediction of the masked blocks plus the final one)
is matched to the targets with the Hungarian algorithm, costs on uniformly sampled points;
the matched masks are then supervised with BCE and dice on importance-sampled points, and all
queries with cross-entropy (unmatched ones towards "no object", down-weighted).

Random draws happen in a fixed order (per level: one point set per image for matching, then the
oversampled and the uniform points for the mask losses), so seeding the generator reproduces the loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import EomtConfig


def sample_points(maps: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly read (N, C, H, W) maps at (N, P, 2) coordinates in [0, 1] (x, y); returns (N, C, P)."""
    grid = (2.0 * coords - 1.0).unsqueeze(2)
    return F.grid_sample(maps, grid, align_corners=False).squeeze(3)


def pairwise_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean BCE between every prediction (Q, P) and every target (N, P): a (Q, N) matrix."""
    pos = F.softplus(-logits)  # BCE against 1
    neg = F.softplus(logits)  # BCE against 0
    return (pos @ targets.T + neg @ (1 - targets).T) / logits.shape[1]


def pairwise_dice(logits: Tensor, targets: Tensor) -> Tensor:
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


def dice_loss(logits: Tensor, targets: Tensor, num_masks: Tensor) -> Tensor:
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def bce_loss(logits: Tensor, targets: Tensor, num_masks: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1).sum() / num_masks


class HungarianMatcher:
    """One-to-one assignment of queries to target masks minimising class + BCE + dice costs."""

    def __init__(self, cost_class: float, cost_mask: float, cost_dice: float, num_points: int) -> None:
        self.cost_class, self.cost_mask, self.cost_dice = cost_class, cost_mask, cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def __call__(self, mask_logits: Tensor, class_logits: Tensor, mask_labels: list[Tensor],
                 class_labels: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        indices = []
        from scipy.optimize import linear_sum_assignment  # here: scipy.optimize costs inference 0.2 s to import

        for i in range(mask_logits.shape[0]):
            cost_class = -class_logits[i].float().softmax(-1)[:, class_labels[i]]
            points = torch.rand(1, self.num_points, 2, device=mask_logits.device)
            target = mask_labels[i].to(mask_logits.device, torch.float32)[:, None]
            target = sample_points(target, points.expand(target.shape[0], -1, -1))[:, 0]
            pred = mask_logits[i].float()[:, None]
            pred = sample_points(pred, points.expand(pred.shape[0], -1, -1))[:, 0]
            cost = (self.cost_mask * pairwise_bce(pred, target) + self.cost_class * cost_class
                    + self.cost_dice * pairwise_dice(pred, target))
            big = torch.finfo(cost.dtype).max
            cost = torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices


class EomtLoss(nn.Module):
    """Weighted sum of CE, BCE and dice over all prediction levels."""

    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        self.num_labels = config.num_labels
        self.class_weight, self.mask_weight, self.dice_weight = (
            config.class_weight, config.mask_weight, config.dice_weight)
        self.num_points = config.train_num_points
        self.oversample_ratio = config.oversample_ratio
        self.importance_sample_ratio = config.importance_sample_ratio
        self.matcher = HungarianMatcher(config.class_weight, config.mask_weight, config.dice_weight,
                                        config.train_num_points)
        empty_weight = torch.ones(config.num_labels + 1)
        empty_weight[-1] = config.no_object_weight
        self.register_buffer("empty_weight", empty_weight)

    @staticmethod
    def num_masks(class_labels: list[Tensor], device: torch.device) -> Tensor:
        """Target masks per process, averaged over processes when distributed, at least 1."""
        total = torch.tensor(float(sum(len(c) for c in class_labels)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(total)
            total = total / dist.get_world_size()
        return total.clamp(min=1)

    def _point_coords(self, logits: Tensor) -> Tensor:
        """Importance sampling: the most uncertain of oversampled points, plus uniform ones."""
        n = logits.shape[0]
        num_sampled = int(self.num_points * self.oversample_ratio)
        num_uncertain = int(self.importance_sample_ratio * self.num_points)
        coords = torch.rand(n, num_sampled, 2, device=logits.device)
        uncertainty = -sample_points(logits, coords)[:, 0].abs()
        top = uncertainty.topk(num_uncertain, dim=1).indices
        coords = torch.gather(coords, 1, top[..., None].expand(-1, -1, 2))
        num_random = self.num_points - num_uncertain
        if num_random > 0:
            coords = torch.cat([coords, torch.rand(n, num_random, 2, device=logits.device)], dim=1)
        return coords

    def _mask_losses(self, mask_logits: Tensor, targets: Tensor, indices, num_masks: Tensor) -> tuple[Tensor, Tensor]:
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        tgt_idx = torch.cat([tgt for _, tgt in indices])
        pred = mask_logits[batch_idx, src_idx][:, None]
        target = targets[batch_idx, tgt_idx][:, None].to(pred.dtype)
        if pred.shape[0] == 0:
            zero = mask_logits.sum() * 0.0
            return zero, zero
        with torch.no_grad():
            coords = self._point_coords(pred)
            point_labels = sample_points(target, coords)[:, 0]
        point_logits = sample_points(pred, coords)[:, 0]
        return bce_loss(point_logits, point_labels, num_masks), dice_loss(point_logits, point_labels, num_masks)

    def _class_loss(self, class_logits: Tensor, class_labels: list[Tensor], indices) -> Tensor:
        target = torch.full(class_logits.shape[:2], self.num_labels, dtype=torch.int64, device=class_logits.device)
        for i, (src, tgt) in enumerate(indices):
            target[i, src.to(target.device)] = class_labels[i].to(target.device)[tgt]
        return F.cross_entropy(class_logits.transpose(1, 2), target, weight=self.empty_weight.to(class_logits.dtype))

    @staticmethod
    def _stack_targets(mask_labels: list[Tensor]) -> Tensor:
        """Pad per-image target masks (N_i, H, W) into one (B, max N, max H, max W) tensor."""
        n = max(m.shape[0] for m in mask_labels)
        h = max(m.shape[-2] for m in mask_labels)
        w = max(m.shape[-1] for m in mask_labels)
        out = mask_labels[0].new_zeros((len(mask_labels), n, h, w))
        for i, m in enumerate(mask_labels):
            out[i, : m.shape[0], : m.shape[1], : m.shape[2]] = m
        return out

    def forward(self, mask_logits_per_level: list[Tensor], class_logits_per_level: list[Tensor],
                mask_labels: list[Tensor], class_labels: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        device = mask_logits_per_level[-1].device
        mask_labels = [m.to(device) for m in mask_labels]
        class_labels = [c.to(device) for c in class_labels]
        targets = self._stack_targets(mask_labels)
        num_masks = self.num_masks(class_labels, device)
        parts = {"loss_cross_entropy": 0.0, "loss_mask": 0.0, "loss_dice": 0.0}
        for mask_logits, class_logits in zip(mask_logits_per_level, class_logits_per_level, strict=True):
            indices = self.matcher(mask_logits, class_logits, mask_labels, class_labels)
            bce, dice = self._mask_losses(mask_logits, targets, indices, num_masks)
            ce = self._class_loss(class_logits, class_labels, indices)
            parts["loss_cross_entropy"] = parts["loss_cross_entropy"] + self.class_weight * ce
            parts["loss_mask"] = parts["loss_mask"] + self.mask_weight * bce
            parts["loss_dice"] = parts["loss_dice"] + self.dice_weight * dice
        return sum(parts.values()), parts
