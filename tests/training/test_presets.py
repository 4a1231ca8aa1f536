"""Every preset against the authors' configs (tue-mps/eomt configs/, model_zoo/), written out here as a table."""

from __future__ import annotations

import pytest

from eomt.training.recipe import available_recipes, load_recipe

COCO_L = ([14782, 29564, 44346, 59128], [29564, 44346, 59128, 73910])
COCO_SB = ([14782, 36955, 59128], [29564, 51737, 73910])
COCO_SB_2X = ([29564, 73910, 118256], [59128, 103474, 147820])
COCO_G = ([14782, 25869, 36955, 48042, 59128], [29564, 40651, 51737, 62824, 73910])
ADE_L = ([6520, 13040, 19560, 26080], [13040, 19560, 26080, 32600])
ADE_G = ([6520, 11410, 16300, 21190, 26080], [13040, 17930, 22820, 27710, 32600])
CITY_L = ([3317, 6634, 9951, 13268], [6634, 9951, 13268, 16585])
V3_COCO_L = ([0, 29564, 44346, 59128], [3000, 44346, 59128, 73910])
V3_COCO_SB_2X = ([0, 73910, 118256], [3000, 103474, 147820])
V3_ADE_L = ([0, 6520, 9780, 13040], [3000, 9780, 13040, 16300])

V2 = dict(lr=1e-4, layer_decay=0.8, llrd_l2=True, warmup=500, backbone_warmup=1000)
V3 = dict(lr=2e-4, layer_decay=0.8, llrd_l2=False, warmup=2000, backbone_warmup=3000)  # COCO: llrd_l2_enabled False
V2_L = "timm/vit_large_patch14_reg4_dinov2.lvd142m"
V2_G = "timm/vit_giant_patch14_reg4_dinov2.lvd142m"
V3_L = "facebook/dinov3-vitl16-pretrain-lvd1689m"

# name: (dataset, size, epochs, (starts, ends), optimiser, num_blocks, queries, start from)
AUTHORS = {
    "coco_panoptic_small_640": ("coco_panoptic", 640, 12, COCO_SB, V2, 3, 200,
                                "timm/vit_small_patch14_reg4_dinov2.lvd142m"),
    "coco_panoptic_small_640_2x": ("coco_panoptic", 640, 24, COCO_SB_2X, V2, 3, 200,
                                   "timm/vit_small_patch14_reg4_dinov2.lvd142m"),
    "coco_panoptic_base_640": ("coco_panoptic", 640, 12, COCO_SB, V2, 3, 200,
                               "timm/vit_base_patch14_reg4_dinov2.lvd142m"),
    "coco_panoptic_base_640_2x": ("coco_panoptic", 640, 24, COCO_SB_2X, V2, 3, 200,
                                  "timm/vit_base_patch14_reg4_dinov2.lvd142m"),
    "coco_panoptic_large_640": ("coco_panoptic", 640, 12, COCO_L, V2, 4, 200, V2_L),
    "coco_panoptic_large_1280": ("coco_panoptic", 1280, 12, COCO_L, V2, 4, 200, V2_L),
    "coco_panoptic_giant_640": ("coco_panoptic", 640, 12, COCO_G, V2, 5, 200, V2_G),
    "coco_panoptic_giant_1280": ("coco_panoptic", 1280, 12, COCO_G, V2, 5, 200, V2_G),
    "coco_instance_large_640": ("coco_instance", 640, 12, COCO_L, V2, 4, 200, V2_L),
    "coco_instance_large_1280": ("coco_instance", 1280, 12, COCO_L, V2, 4, 200, V2_L),
    "ade20k_semantic_large_512": ("ade20k_semantic", 512, 31, ADE_L, V2, 4, 100, V2_L),
    "cityscapes_semantic_large_1024": ("cityscapes_semantic", 1024, 107, CITY_L, V2, 4, 100, V2_L),
    # ADE20K panoptic: fine-tuned from the COCO-panoptic EoMT of the same size (model zoo)
    "ade20k_panoptic_large_640": ("ade20k_panoptic", 640, 31, ADE_L, V2, None, None,
                                  "pretrained:tue-mps/coco_panoptic_eomt_large_640"),
    "ade20k_panoptic_large_1280": ("ade20k_panoptic", 1280, 31, ADE_L, V2, None, None,
                                   "pretrained:tue-mps/coco_panoptic_eomt_large_1280"),
    "ade20k_panoptic_giant_640": ("ade20k_panoptic", 640, 31, ADE_G, V2, None, None,
                                  "pretrained:tue-mps/coco_panoptic_eomt_giant_640"),
    "ade20k_panoptic_giant_1280": ("ade20k_panoptic", 1280, 31, ADE_G, V2, None, None,
                                   "pretrained:tue-mps/coco_panoptic_eomt_giant_1280"),
    # DINOv3 (the two 1280 configs of the authors forget the input size; ours train at 1280)
    "coco_panoptic_small_640_dinov3": ("coco_panoptic", 640, 24, V3_COCO_SB_2X, V3, 3, 200,
                                       "facebook/dinov3-vits16-pretrain-lvd1689m"),
    "coco_panoptic_base_640_dinov3": ("coco_panoptic", 640, 24, V3_COCO_SB_2X, V3, 3, 200,
                                      "facebook/dinov3-vitb16-pretrain-lvd1689m"),
    "coco_panoptic_large_640_dinov3": ("coco_panoptic", 640, 12, V3_COCO_L, V3, 4, 200, V3_L),
    "coco_panoptic_large_1280_dinov3": ("coco_panoptic", 1280, 12, V3_COCO_L, V3, 4, 200, V3_L),
    "coco_instance_large_640_dinov3": ("coco_instance", 640, 12, COCO_L, V3, 4, 200, V3_L),
    "coco_instance_large_1280_dinov3": ("coco_instance", 1280, 12, COCO_L, V3, 4, 200, V3_L),
    "ade20k_semantic_large_512_dinov3": ("ade20k_semantic", 512, 16, V3_ADE_L,
                                         dict(V3, layer_decay=1.0, llrd_l2=True), 4, 100, V3_L),
}
PHOTOMETRIC = {"coco_panoptic": False, "coco_instance": False, "ade20k_semantic": True, "ade20k_panoptic": True,
               "cityscapes_semantic": True}
SCALES = {"coco_panoptic": [0.1, 2.0], "coco_instance": [0.1, 2.0], "ade20k_panoptic": [0.1, 2.0],
          "ade20k_semantic": [0.5, 2.0], "cityscapes_semantic": [0.5, 2.0]}


def test_the_table_covers_every_dataset_preset():
    assert sorted(AUTHORS) == sorted(n for n in available_recipes() if n not in ("finetune_custom", "synthetic_tiny"))


@pytest.mark.parametrize("name", sorted(AUTHORS))
def test_preset_equals_the_authors_config(name):
    dataset, size, epochs, (starts, ends), optimiser, blocks, queries, start = AUTHORS[name]
    r = load_recipe(name)
    t, d, m = r.train, r.data, r.model
    assert (d.dataset, d.crop_size, m.config.get("image_size")) == (dataset, size, size)
    assert d.photometric == PHOTOMETRIC[dataset] and list(d.scale_range) == SCALES[dataset]
    assert t.epochs == epochs and (t.annealing_starts, t.annealing_ends) == (starts, ends)
    for key, value in optimiser.items():
        assert getattr(t, key) == value, key
    # shared by every config: AdamW weight decay 0.05 on every parameter, poly 0.9, clip 0.01, global batch 16
    assert (t.weight_decay, t.weight_decay_policy, t.poly_power, t.grad_clip) == (0.05, "all", 0.9, 0.01)
    assert t.batch_size * t.devices * t.accumulate == 16
    if start.startswith("pretrained:"):
        assert m.pretrained == start.split(":", 1)[1] and m.backbone is None
        assert set(m.config) == {"image_size"}  # the architecture comes from the COCO checkpoint
    else:
        assert m.backbone == start and m.pretrained is None
        assert m.config["num_blocks"] == blocks == len(starts) and m.config["num_queries"] == queries
    if "dinov3" in name:
        assert m.config["model_type"] == "eomt_dinov3" and m.config["layer_norm_eps"] == 1e-5
