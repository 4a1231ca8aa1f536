"""Evaluation metrics with distributed-safe accumulation: mIoU, panoptic quality and COCO mask AP."""

from .instance import InstanceMetric
from .panoptic import PanopticMetric
from .semantic import SemanticMetric

__all__ = ["InstanceMetric", "PanopticMetric", "SemanticMetric"]
