"""The EoMT network in plain PyTorch: one file per component."""
