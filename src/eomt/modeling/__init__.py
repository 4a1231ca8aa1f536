"""The EoMT network in plain PyTorch, one file per component: blocks, embeddings, heads, loss, the model.

Imports only `eomt.config`; `from_pretrained` / `save_pretrained` hand the class to `eomt.checkpoints` at call
time. Never imports processing/, runtimes/, data/, evaluation/, training/, jobs/ or cli/.
"""
