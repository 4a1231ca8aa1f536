"""Printing metric dictionaries as the tables papers show."""

from __future__ import annotations

import math
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "  n/a" if math.isnan(value) else f"{value:5.1f}"
    return str(value)


def format_table(result: dict[str, Any], per_class: bool = False) -> str:
    """A plain-text table of an `evaluate` result (task-specific columns)."""
    metrics, task = result["metrics"], result["task"]
    lines = [f"{result['dataset']} {result['split']}: {result['num_images']} images, {task}"]
    if task == "semantic":
        lines.append(f"  mIoU {_fmt(metrics['mIoU'])}   pixel accuracy {_fmt(metrics['pixel_accuracy'])}   "
                     f"mean accuracy {_fmt(metrics['mean_accuracy'])}")
        rows = list(zip(result.get("class_names", []), metrics.get("per_class_iou", []), strict=False))
        header = "  class IoU"
    elif task == "panoptic":
        lines.append("           PQ    SQ    RQ   classes")
        for group in ("All", "Things", "Stuff"):
            g = metrics[group]
            lines.append(f"  {group:7} {_fmt(g['PQ'])} {_fmt(g['SQ'])} {_fmt(g['RQ'])}   {g['n']}")
        rows = list(zip(result.get("class_names", []), metrics.get("per_class_PQ", []), strict=False))
        header = "  class PQ"
    else:
        lines.append("    AP  AP50  AP75   APs   APm   APl")
        lines.append(" " + " ".join(_fmt(metrics[k]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")))
        rows = list(zip(result.get("class_names", []), metrics.get("per_class_AP", []), strict=False))
        header = "  class AP"
    if per_class and rows:
        lines.append(header)
        width = max(len(str(name)) for name, _ in rows)
        lines.extend(f"    {str(name):{width}} {_fmt(value)}" for name, value in rows)
    return "\n".join(lines)
