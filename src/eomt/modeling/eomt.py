"""EomtForUniversalSegmentation: a ViT whose last `num_blocks` blocks also carry learned queries.

Read top to bottom: embeddings -> blocks (queries join before block `depth - num_blocks`) ->
final norm -> class and mask heads. In training, each of the last `num_blocks` blocks is
preceded by an intermediate prediction whose masks restrict which patches each query may
attend to (masked attention); a query's mask is lifted with probability 1 - p_b, where the
trainer anneals p_b from 1 to 0. With every p_b = 0 in eval mode the forward pass is a plain ViT.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..config import EomtConfig, _torch_dtype
from .embeddings import Embeddings, RopeEmbeddings
from .heads import MaskHead, ScaleBlock
from .loss import EomtLoss
from .vit import Block, LayerScale

# The fields of transformers' EomtForUniversalSegmentationOutput, in its order (the tuple order).
SEED_FIELDS = ("loss", "class_queries_logits", "masks_queries_logits", "last_hidden_state", "hidden_states",
               "attentions", "patch_offsets")
# Keyword arguments transformers' forward takes through **kwargs (TransformersKwargs) that mean nothing for
# an encoder-only vision model; accepted and ignored, as transformers does.
IGNORED_KWARGS = frozenset({"num_items_in_batch", "output_router_logits", "cu_seq_lens_q", "cu_seq_lens_k",
                            "max_length_q", "max_length_k", "position_ids", "is_causal", "seq_idx"})


@dataclass
class EomtOutput:
    """What the model returns; reads like transformers' ModelOutput.

    The fields set (not None) among transformers' own, in its order, are the output's keys:
    `out["masks_queries_logits"]`, `out[0]`, `len(out)`, `out.to_tuple()` (what `return_dict=False`
    returns), `keys()`, `values()`, `items()`, iteration over keys. `loss_dict` and
    `predictions_per_level` are eomt additions, read as attributes (or `out["loss_dict"]`) only.

    `hidden_states` (on request): the input of the first block, then the output of every block,
    the last one after the final LayerNorm (the transformers convention); queries are in front
    from block `depth - num_blocks` on. `attentions` (on request): per block, the softmax attention
    weights (batch, heads, tokens, tokens).
    """

    loss: Tensor | None = None
    class_queries_logits: Tensor | None = None
    masks_queries_logits: Tensor | None = None
    last_hidden_state: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    patch_offsets: list[Tensor] | None = None
    loss_dict: dict[str, Tensor] | None = None
    # (mask, class) logits of every level, intermediate ones first; filled in training mode.
    predictions_per_level: list[tuple[Tensor, Tensor]] | None = None

    def keys(self) -> list[str]:
        return [name for name in SEED_FIELDS if getattr(self, name) is not None]

    def values(self) -> list[Any]:
        return [getattr(self, name) for name in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(name, getattr(self, name)) for name in self.keys()]

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(self.values())

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key in self.keys() or (key in ("loss_dict", "predictions_per_level") and getattr(self, key) is not None):
                return getattr(self, key)
            raise KeyError(key)
        return self.to_tuple()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.keys() else default


def _reread_mask_probs(module: EomtForUniversalSegmentation, _incompatible_keys: Any) -> None:
    module.mask_probs()


class EomtForUniversalSegmentation(nn.Module):
    """EoMT for semantic, instance and panoptic segmentation (DINOv2 or DINOv3 backbone)."""

    def __init__(self, config: EomtConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.rope_embeddings = RopeEmbeddings(config) if config.is_dinov3 else None
        self.layers = nn.ModuleList([Block(config) for _ in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.query = nn.Embedding(config.num_queries, config.hidden_size)
        self.upscale_block = ScaleBlock(config)
        self.mask_head = MaskHead(config)
        self.class_predictor = nn.Linear(config.hidden_size, config.num_labels + 1)
        self.criterion = EomtLoss(config)
        self.register_buffer("attn_mask_probs", torch.ones(config.num_blocks))
        self.first_query_block = config.num_hidden_layers - config.num_blocks
        self.gradient_checkpointing = False  # recompute blocks in backward to save activation memory
        # attn_mask_probs as Python floats, so that the forward decides which blocks mask without a host sync;
        # re-read only when the buffer changes (see `mask_probs`).
        self._mask_probs: list[float] = []
        self._mask_probs_key: tuple | None = None
        self.register_load_state_dict_post_hook(_reread_mask_probs)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random initialisation (the transformers scheme); real weights come from `from_pretrained`."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                module.reset_parameters()
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight)
            elif isinstance(module, LayerScale):
                module.lambda1.fill_(self.config.layerscale_value)
        nn.init.trunc_normal_(self.embeddings.cls_token, std=std)
        nn.init.zeros_(self.embeddings.register_tokens)
        self.attn_mask_probs.fill_(1.0)
        self.mask_probs()

    def mask_probs(self) -> list[float]:
        """`attn_mask_probs` as Python floats, copied from the device only when the buffer changed.

        A change is seen through the tensor's version counter (bumped by every in-place write:
        `zero_()`, `fill_()`, `copy_()`, loading) and its storage (`.to()`), so an eval forward
        costs no host sync. A model built inside `torch.inference_mode()` has no version counter:
        its buffer is read at every call.
        """
        probs = self.attn_mask_probs
        if probs.is_meta:
            return self._mask_probs
        if probs.is_inference():
            self._mask_probs, self._mask_probs_key = probs.tolist(), None
            return self._mask_probs
        key = (probs.data_ptr(), probs._version, probs.device)
        if key != self._mask_probs_key:
            self._mask_probs = probs.tolist()
            self._mask_probs_key = key
        return self._mask_probs

    def _forward_mask_probs(self) -> list[float] | Tensor:
        """Python floats where the forward may branch on them, else the buffer itself.

        Under torch.compile / torch.export in eval mode the values last read are used (they are
        read on loading, on `eval()`, by `mask_probs()` and by every eager forward): after
        changing the buffer in place, call one of them before compiling. In training the
        compiled forward takes the buffer as a tensor and every query block masks.
        """
        if not torch.compiler.is_compiling():
            return self.mask_probs()
        return self.attn_mask_probs if self.training else self._mask_probs

    def train(self, mode: bool = True) -> EomtForUniversalSegmentation:
        super().train(mode)
        self.mask_probs()
        return self

    # ---- convenience ---------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.class_predictor.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The backbone's dtype: what `pixel_values` should be (the heads may be float32, see `float32_heads`)."""
        return next(self.embeddings.parameters()).dtype

    def float32_heads(self) -> EomtForUniversalSegmentation:
        """Keep the mask MLP, upscaler and class head in float32 under a bfloat16 / float16 backbone.

        Mask logits are large (tens), and bfloat16 rounds them to an eighth or a quarter: on a ViT-S at 640
        the segment partition agrees with float32 on 99.4% of pixels this way, 95.2% with bfloat16 heads,
        for about 9% more time on CPU. Logits come out float32.
        """
        for head in (self.mask_head, self.upscale_block, self.class_predictor):
            head.float()
        return self

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, reinit_class_head: bool = False,
                        **kwargs: Any) -> EomtForUniversalSegmentation | tuple[EomtForUniversalSegmentation, dict]:
        """Load from a hub id, a transformers-format directory or an authors' checkpoint file.

        Takes transformers' loading arguments `dtype` / `torch_dtype`, `device_map` (one device),
        `revision`, `cache_dir`, `local_files_only`, `token`, `subfolder`, `force_download` and
        `output_loading_info`, and EomtConfig field overrides; any other keyword is a TypeError.
        `reinit_class_head=True` (with e.g. `num_labels=K`) keeps everything but the class head,
        which is freshly initialised: fine-tuning on a dataset with other classes.
        """
        from ..checkpoints.load import load_model

        return load_model(cls, pretrained_model_name_or_path, reinit_class_head=reinit_class_head, **kwargs)

    @classmethod
    def _from_config(cls, config: EomtConfig, *, attn_implementation: str | None = None, dtype: Any = None,
                     torch_dtype: Any = None) -> EomtForUniversalSegmentation:
        """A randomly initialised model for a copy of `config` (transformers' `_from_config`).

        `attn_implementation` "eager" or "sdpa" give the same model: attention runs through SDPA and the
        weights asked for with `output_attentions` come from an explicit softmax, as eager's do. `dtype` /
        `torch_dtype` (a torch dtype or its name) cast the new model and are recorded in its config.
        """
        if attn_implementation not in (None, "eager", "sdpa"):
            raise ValueError(f"attn_implementation {attn_implementation!r} is not supported (only 'eager' or 'sdpa')")
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass one of them")
        config = copy.deepcopy(config)
        model = cls(config)
        wanted = dtype if dtype is not None else torch_dtype
        if wanted is not None:
            config.dtype = _torch_dtype(wanted)
            model.to(config.dtype)
        return model

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json + model.safetensors in the layout transformers reads."""
        from ..checkpoints.save import save_model

        save_model(self, directory)

    # ---- forward -------------------------------------------------------------------------------

    def _check_input(self, pixel_values: Tensor) -> None:
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be (batch, channels, height, width), got shape {tuple(pixel_values.shape)}")
        channels, height, width = pixel_values.shape[1:]
        if channels != self.config.num_channels:
            raise ValueError(f"pixel_values has {channels} channels, the model expects {self.config.num_channels}")
        p = self.config.patch_size
        if height % p or width % p:
            raise ValueError(f"input size {height}x{width} is not a multiple of the patch size {p}")

    def predict(self, tokens: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Mask logits (B, Q, 4h, 4w) and class logits (B, Q, K+1) from final-normed tokens."""
        num_queries = self.config.num_queries
        tokens = tokens.to(self.class_predictor.weight.dtype)  # the heads may be float32 (float32_heads)
        queries = tokens[:, :num_queries]
        patches = tokens[:, num_queries + self.embeddings.num_prefix_tokens:]
        patches = patches.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
        mask_embed = self.mask_head(queries)
        pixel_embed = self.upscale_block(patches)
        return torch.einsum("bqc,bchw->bqhw", mask_embed, pixel_embed), self.class_predictor(queries)

    def _attention_mask(self, mask_logits: Tensor, prob: float | Tensor, grid: tuple[int, int],
                        num_tokens: int) -> Tensor:
        """Boolean (B, 1, N, N) mask: query i sees patch j only where its mask logit > 0,
        unless the query's mask is lifted (probability 1 - prob; `prob` may be a 0-d tensor)."""
        batch, num_queries = mask_logits.shape[:2]
        start = num_queries + self.embeddings.num_prefix_tokens
        mask = torch.ones(batch, num_tokens, num_tokens, dtype=torch.bool, device=mask_logits.device)
        on_grid = F.interpolate(mask_logits, size=grid, mode="bilinear").flatten(2) > 0
        if isinstance(prob, Tensor):  # traced: no branch on the value; prob 0 lifts every mask
            lifted = (torch.rand(batch, num_queries, device=mask_logits.device) > prob) | (prob <= 0)
            on_grid = on_grid | lifted[..., None]
        elif prob < 1:
            lifted = torch.rand(batch, num_queries, device=mask_logits.device) > prob
            on_grid = on_grid | lifted[..., None]
        mask[:, :num_queries, start:] = on_grid
        return mask[:, None]

    def forward(self, pixel_values: Tensor, mask_labels: list[Tensor] | None = None,
                class_labels: list[Tensor] | None = None, patch_offsets: list[Tensor] | None = None,
                output_hidden_states: bool | None = None, output_attentions: bool | None = None,
                return_dict: bool | None = None, **kwargs: Any) -> EomtOutput | tuple:
        """Logits (and the loss when `mask_labels` and `class_labels` are given).

        `output_hidden_states`, `output_attentions` and `return_dict` default to the config's
        attributes, as in transformers; `return_dict=False` returns `EomtOutput.to_tuple()`.
        Attention weights are computed by an explicit softmax only when asked for; otherwise
        attention runs through SDPA.
        """
        unknown = sorted(set(kwargs) - IGNORED_KWARGS)
        if unknown:
            raise TypeError(f"forward() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if return_dict is None:
            return_dict = self.config.return_dict
        self._check_input(pixel_values)
        height, width = pixel_values.shape[-2:]
        grid = (height // self.config.patch_size, width // self.config.patch_size)
        x = self.embeddings(pixel_values)
        rope = self.rope_embeddings(height, width, x.dtype) if self.rope_embeddings is not None else None
        probs = self._forward_mask_probs()
        # In eval mode a block whose probability is 0 computes no prediction and no mask at all.
        masked = [self.training or isinstance(probs, Tensor) or p > 0 for p in probs]

        hidden_states: list[Tensor] | None = [] if output_hidden_states else None
        attentions: list[Tensor] | None = [] if output_attentions else None
        levels: list[tuple[Tensor, Tensor]] = []
        for i, block in enumerate(self.layers):
            attn_mask = None
            if i == self.first_query_block:
                x = torch.cat([self.query.weight[None].expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            if i == 0 and hidden_states is not None:
                hidden_states.append(x)
            if i >= self.first_query_block and masked[i - self.first_query_block]:
                mask_logits, class_logits = self.predict(self.layernorm(x), grid)
                levels.append((mask_logits, class_logits))
                prob = probs[i - self.first_query_block]
                attn_mask = self._attention_mask(mask_logits, prob, grid, x.shape[1])
            args = (x, attn_mask, rope, attentions is not None)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, *args, use_reentrant=False)
            else:
                x = block(*args)
            if attentions is not None:
                x, weights = x
                attentions.append(weights)
            if hidden_states is not None:
                hidden_states.append(x)

        x = self.layernorm(x)
        if hidden_states is not None:  # as in transformers, the last entry is the final-normed output
            hidden_states[-1] = x
        mask_logits, class_logits = self.predict(x, grid)
        levels.append((mask_logits, class_logits))

        loss = loss_dict = None
        if mask_labels is not None and class_labels is not None:
            loss, loss_dict = self.criterion(
                [m for m, _ in levels], [c for _, c in levels], mask_labels, class_labels
            )
        out = EomtOutput(
            class_queries_logits=class_logits,
            masks_queries_logits=mask_logits,
            last_hidden_state=x,
            loss=loss,
            loss_dict=loss_dict,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
            attentions=tuple(attentions) if attentions is not None else None,
            patch_offsets=patch_offsets,
            predictions_per_level=levels if self.training else None,
        )
        return out if return_dict else out.to_tuple()


EomtDinov3ForUniversalSegmentation = EomtForUniversalSegmentation
