"""Shared test helpers: tiny transformers reference models and their saved directories."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import torch


def make_reference(kind: str = "eomt", seed: int = 0, **overrides):
    """A randomly initialised transformers EoMT (the reference oracle), with non-trivial weights."""
    import transformers

    defaults = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_blocks=2, num_queries=6,
                    image_size=64, num_labels=4, train_num_points=300)
    defaults.update(overrides)
    torch.manual_seed(seed)
    if kind == "eomt_dinov3":
        defaults.setdefault("intermediate_size", 2 * defaults["hidden_size"])
        model = transformers.EomtDinov3ForUniversalSegmentation(transformers.EomtDinov3Config(**defaults))
    else:
        model = transformers.EomtForUniversalSegmentation(transformers.EomtConfig(**defaults))
    with torch.no_grad():  # perturb everything, so that scale/bias/norm weights are not trivially 1 or 0
        for name, param in model.named_parameters():
            if "lambda1" in name or name.endswith("norm1.weight") or name.endswith("norm2.weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.add_(0.02 * torch.randn_like(param))
    return model.eval()


def save_reference(model, directory: Path, probs: float | None = None) -> Path:
    if probs is not None:
        model.attn_mask_probs.fill_(probs)
    model.save_pretrained(directory)
    return directory


def random_targets(batch: int, height: int, width: int, num_labels: int, seed: int = 1):
    """Per image, a few rectangular masks with class ids (the layout transformers' loss takes)."""
    g = torch.Generator().manual_seed(seed)
    mask_labels, class_labels = [], []
    for i in range(batch):
        n = 2 + i
        masks = torch.zeros(n, height, width)
        for j in range(n):
            y0, x0 = torch.randint(0, height // 2, (2,), generator=g).tolist()
            h, w = torch.randint(height // 8, height // 2, (2,), generator=g).tolist()
            masks[j, y0:y0 + h, x0:x0 + w] = 1.0
        mask_labels.append(masks)
        class_labels.append(torch.randint(0, num_labels, (n,), generator=g))
    return mask_labels, class_labels


def write_hub_cache(cache: Path, repo_id: str, source_dir: Path, revision: str = "main", subfolder: str = "") -> str:
    """Lay files out as huggingface_hub's cache does: blobs, a snapshot of symlinks, refs/<revision>.

    Returns the snapshot's commit hash; several revisions of one repo may be written.
    """
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest() if revision != "main" else (
        hashlib.sha1(repo_id.encode()).hexdigest())
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    snapshot = repo / "snapshots" / commit / subfolder
    (repo / "blobs").mkdir(exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    depth = 2 + len(Path(subfolder).parts)
    for file in source_dir.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copy(file, repo / "blobs" / blob)
        os.symlink(Path(*[".."] * depth, "blobs", blob), snapshot / file.name)
    return commit


def make_confident(model, class_scale: float = 40.0, mask_scale: float = 8.0):
    """Sharpen a random model's predictions so that 0.8 thresholds keep some segments and drop others."""
    with torch.no_grad():
        model.class_predictor.weight.mul_(class_scale)
        model.class_predictor.bias.mul_(class_scale)
        model.mask_head.fc3.weight.mul_(mask_scale)
        model.mask_head.fc3.bias.mul_(mask_scale)
    return model


PROCESSOR_SETTINGS = {
    "semantic": dict(size={"shortest_edge": 64}, do_split_image=True),
    "instance": dict(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True),
    "panoptic": dict(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True),
}


def save_task_model(directory: Path, task: str) -> Path:
    """A tiny confident model + the processor config of `task`, saved with transformers."""
    import transformers

    model = make_confident(make_reference("eomt", seed=2, num_labels=6, num_queries=12), 10.0, 30.0)
    model.attn_mask_probs.zero_()
    model.save_pretrained(directory)
    transformers.EomtImageProcessor(**PROCESSOR_SETTINGS[task]).save_pretrained(directory)
    return directory


def fail_overlay_writes(monkeypatch, name_part: str, message: str = "disk full") -> None:
    """Make writing the overlay of every image whose path contains `name_part` raise OSError(message)."""
    import eomt.outputs.atomic

    real = eomt.outputs.atomic.write_jpeg_atomic

    def failing(path, *args, **kwargs):
        if name_part in str(path):
            raise OSError(message)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(eomt.outputs.atomic, "write_jpeg_atomic", failing)


def to_authors_format(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers EoMT state dict the way the authors' training code names it."""
    b = "network.encoder.backbone."
    out = {"network.encoder.pixel_mean": torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
           "network.encoder.pixel_std": torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)}
    for key, value in state.items():
        if m := re.match(r"layers\.(\d+)\.attention\.q_proj\.(weight|bias)", key):
            qkv = [state[f"layers.{m[1]}.attention.{p}_proj.{m[2]}"] for p in "qkv"]
            out[f"{b}blocks.{m[1]}.attn.qkv.{m[2]}"] = torch.cat(qkv)
            continue
        if re.match(r"layers\.\d+\.attention\.[kv]_proj\.", key):
            continue
        if m := re.match(r"layers\.(\d+)\.mlp\.gate_proj\.(weight|bias)", key):
            out[f"{b}blocks.{m[1]}.mlp.fc1.{m[2]}"] = torch.cat([value, state[f"layers.{m[1]}.mlp.up_proj.{m[2]}"]])
            continue
        if ".mlp.up_proj." in key:
            continue
        renames = [
            (r"^embeddings\.cls_token$", f"{b}cls_token"),
            (r"^embeddings\.register_tokens$", f"{b}reg_token"),
            (r"^embeddings\.patch_embeddings\.projection\.", f"{b}patch_embed.proj."),
            (r"^layernorm\.", f"{b}norm."),
            (r"^layers\.(\d+)\.attention\.out_proj\.", rf"{b}blocks.\1.attn.proj."),
            (r"^layers\.(\d+)\.layer_scale(\d)\.lambda1$", rf"{b}blocks.\1.ls\2.gamma"),
            (r"^layers\.(\d+)\.mlp\.down_proj\.", rf"{b}blocks.\1.mlp.fc2."),
            (r"^layers\.(\d+)\.", rf"{b}blocks.\1."),
            (r"^query\.", "network.q."),
            (r"^class_predictor\.", "network.class_head."),
            (r"^mask_head\.fc1\.", "network.mask_head.0."),
            (r"^mask_head\.fc2\.", "network.mask_head.2."),
            (r"^mask_head\.fc3\.", "network.mask_head.4."),
            (r"^upscale_block\.block\.(\d+)\.layernorm2d\.", r"network.upscale.\1.norm."),
            (r"^upscale_block\.block\.(\d+)\.", r"network.upscale.\1."),
            (r"^attn_mask_probs$", "network.attn_mask_probs"),
        ]
        new = key
        for pattern, replacement in renames:
            new = re.sub(pattern, replacement, key)
            if new != key:
                break
        if key == "embeddings.position_embeddings.weight":
            new, value = f"{b}pos_embed", value[None]
        out[new] = value
    return out
