"""Runtimes other than eager PyTorch: ONNX export, the onnxruntime session (and its export cache), int8.

Below the predictor, above modeling/, processing/ and checkpoints/; never imports predictor, data/,
evaluation/, training/, jobs/ or cli/. Its modules import the standard library only at the top (onnx and
onnxruntime on first use), so the command line can read their constants cheaply.
"""
