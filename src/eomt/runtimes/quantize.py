"""int8 ONNX files: the encoder's linear layers quantized, the query blocks and heads kept in float32.

onnxruntime's dynamic quantization stores the chosen MatMul weights as int8 (one scale per output
channel) and quantizes their activations to uint8 at run time. We quantize only the weight MatMuls of
the blocks that run before the queries join (the first `num_hidden_layers - num_blocks` blocks): on a
ViT-S 640 panoptic model that keeps 99.6% of the pixels in the same segment as float32, where
quantizing every block keeps 98.6% and the heads too 97.8% (`benchmarks/fps.py` prints the agreement).
Nodes are found by the module path the exporter records with each node (`pkg.torch.onnx.name_scopes`).
"""

from __future__ import annotations

import re
from pathlib import Path

_SCOPES = "pkg.torch.onnx.name_scopes"


def encoder_matmuls(model, quantized_blocks: int) -> list[str]:
    """Names of the MatMul nodes with a weight (an initializer input) in blocks 0 .. quantized_blocks - 1."""
    weights = {tensor.name for tensor in model.graph.initializer}
    names = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or not any(name in weights for name in node.input):
            continue
        scopes = next((p.value for p in node.metadata_props if p.key == _SCOPES), "")
        block = re.search(r"'model\.layers\.(\d+)'", scopes)
        if block and int(block.group(1)) < quantized_blocks:
            names.append(node.name)
    return names


def quantize_encoder(source: Path, target: Path, num_hidden_layers: int, num_blocks: int,
                     external_data: bool = False) -> None:
    """Write `target`: `source` with the encoder blocks' linear layers in int8."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source), load_external_data=False)
    chosen = encoder_matmuls(model, num_hidden_layers - num_blocks)
    if not chosen:
        raise ValueError(f"{source}: no encoder linear layer found to quantize (was it exported by eomt?)")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice on calibration, which dynamic quantization has none of
    try:  # reduce_range: 7-bit weights, so that u8 x s8 pair sums cannot saturate int16 on CPUs without VNNI
        # (AVX2 only: full-range weights gave 8% of the logits' range of error there)
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul"], nodes_to_quantize=chosen,
                         use_external_data_format=external_data)
    finally:
        root.setLevel(level)
