"""Dataset readers shared by evaluation and training: COCO panoptic / instance, ADE20K, Cityscapes, custom.

Each reads an extracted folder or the original zip archives without extracting them (`eomt.data.archive`).
Reads files into tensors: never imports modeling/, checkpoints/, runtimes/, evaluation/, training/, jobs/ or cli/.
"""

from eomt.data.archive import Tree, open_tree
from eomt.data.registry import DATASET_KINDS, open_dataset
from eomt.data.sample import Dataset, DatasetError, DatasetInfo, Sample

__all__ = ["DATASET_KINDS", "Dataset", "DatasetError", "DatasetInfo", "Sample", "Tree", "open_dataset", "open_tree"]
