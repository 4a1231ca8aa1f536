"""The EoMT training schedules: mask annealing, layer-wise lr decay and the two-stage warmup + poly.

All are pure functions of the iteration, so a resumed run recomputes exactly the same values.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .recipe import WEIGHT_DECAY_POLICIES


def annealing_probability(step: int, start: int, end: int, power: float = 0.9) -> float:
    """Masked-attention probability of one block: 1 before `start`, 0 from `end`, polynomial between."""
    if step < start:
        return 1.0
    if step >= end:
        return 0.0
    return (1.0 - (step - start) / (end - start)) ** power


def annealing_probabilities(step: int, starts: list[int], ends: list[int], power: float = 0.9) -> list[float]:
    return [annealing_probability(step, s, e, power) for s, e in zip(starts, ends, strict=True)]


def annealing_windows(total_steps: int, num_blocks: int) -> tuple[list[int], list[int]]:
    """The authors' windows as fractions of the run: each T/6 long, starts evenly from T/6 to 4T/6.

    For 4 blocks this is starts T/6, 2T/6, 3T/6, 4T/6 (COCO L: 14782, 29564, 44346, 59128 of 88692);
    for 3 blocks T/6, 2.5T/6, 4T/6; for 5 blocks steps of 0.75T/6.
    """
    window = total_steps / 6
    if num_blocks == 1:
        starts = [window]
    else:
        starts = [window + b * 3 * window / (num_blocks - 1) for b in range(num_blocks)]
    return [round(s) for s in starts], [round(s + window) for s in starts]


# ---- learning rates ----------------------------------------------------------------------------


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Under the "matrices" policy: norms, biases, LayerScale, tokens, position embeddings and queries."""
    return param.ndim <= 1 or name.startswith(("embeddings.cls_token", "embeddings.register_tokens",
                                               "embeddings.position_embeddings", "query."))


def block_index(name: str, depth: int) -> int | None:
    """Backbone block a parameter belongs to for layer-wise decay (embeddings count as block 0, the
    final LayerNorm as block `depth`); None for the new parts (queries, heads, upscaler)."""
    if name.startswith("embeddings."):
        return 0
    if name.startswith("layers."):
        return int(name.split(".")[1])
    if name.startswith("layernorm."):
        return depth
    return None


def lr_scale(block: int, depth: int, num_blocks: int, layer_decay: float, llrd_l2: bool = True) -> float:
    """The authors' layer-wise decay: block b gets layer_decay ** (depth - 1 - b); the final norm (block
    `depth`) gets 1; with `llrd_l2` off, the last `num_blocks` blocks (those carrying queries) get 1 too."""
    if block >= depth or (not llrd_l2 and block >= depth - num_blocks):
        return 1.0
    return layer_decay ** (depth - 1 - block)


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float, freeze_backbone: bool = False,
                 llrd_l2: bool = True, weight_decay_policy: str = "all") -> list[dict]:
    """AdamW groups, one per (block, decay): `lr_scale` from `lr_scale`, `backbone` for the warmup.

    As in the authors' code, every backbone parameter, the final LayerNorm included, follows the backbone
    warmup; the new parts (queries, class and mask heads, upscaler) the head warmup at scale 1.
    `weight_decay_policy` "all" (the authors') decays every parameter; "matrices" exempts norms, biases,
    LayerScale, tokens, position embeddings and queries. With `freeze_backbone`, backbone parameters
    (final norm included) are not trained.
    """
    if weight_decay_policy not in WEIGHT_DECAY_POLICIES:
        raise ValueError(f"weight_decay_policy must be one of {', '.join(WEIGHT_DECAY_POLICIES)}, "
                         f"got {weight_decay_policy!r}")
    depth, num_blocks = model.config.num_hidden_layers, model.config.num_blocks
    groups: dict[tuple, dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        block = block_index(name, depth)
        backbone = block is not None
        if backbone and freeze_backbone:
            param.requires_grad_(False)
            continue
        scale = lr_scale(block, depth, num_blocks, layer_decay, llrd_l2) if backbone else 1.0
        exempt = weight_decay_policy == "matrices" and _no_decay(name, param)
        decay = 0.0 if exempt else weight_decay
        key = (block, exempt)
        if key not in groups:
            label = ("final_norm" if block == depth else f"block{block}") if backbone else "head"
            groups[key] = {"params": [], "names": [], "lr_scale": scale, "weight_decay": decay,
                           "backbone": backbone, "name": f"{label}{'_no_decay' if exempt else ''}"}
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return list(groups.values())


@dataclass
class WarmupPoly:
    """Two-stage warmup then polynomial decay, as a multiplier of each group's base lr.

    Non-backbone groups: linear warmup over `warmup` steps, then (1 - t / (T - warmup)) ** power.
    Backbone groups: 0 for `warmup` steps, linear warmup over `backbone_warmup` more, then the same
    polynomial over what is left of the run.
    """

    total_steps: int
    warmup: int = 500
    backbone_warmup: int = 1000
    power: float = 0.9

    def factor(self, step: int, backbone: bool) -> float:
        if backbone:
            if step < self.warmup:
                return 0.0
            step, start = step - self.warmup, self.warmup + self.backbone_warmup
            if step < self.backbone_warmup:
                return (step + 1) / self.backbone_warmup
            return self._poly(step + self.warmup - start, self.total_steps - start)
        if step < self.warmup:
            return (step + 1) / self.warmup
        return self._poly(step - self.warmup, self.total_steps - self.warmup)

    def _poly(self, t: int, span: int) -> float:
        return max(0.0, 1.0 - t / max(span, 1)) ** self.power


def set_learning_rates(optimizer, base_lr: float, schedule: WarmupPoly, step: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group["lr_scale"] * schedule.factor(step, group["backbone"])
