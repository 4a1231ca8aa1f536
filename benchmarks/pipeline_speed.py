"""End-to-end speed: image file -> final segmentation, eomt vs transformers on the same weights.

    python benchmarks/pipeline_speed.py [--runs 5] [--image examples/coffee.png] [--device cpu]

For each task (semantic: sliding window; instance and panoptic: padded) a ViT-S EoMT at 640 with
random weights (sharpened so that thresholds keep segments) is saved once and loaded by both
libraries. Each run times the whole path (open the file, preprocess, forward, post-process) and,
separately, post-processing alone on the same logits. Medians are printed with the ratio
transformers / eomt (> 1: eomt faster), after checking that both give the same segmentation.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers
from PIL import Image

from eomt.predictor import Segmenter

TASKS = {
    "semantic": (150, dict(size={"shortest_edge": 640}, do_split_image=True)),
    "instance": (80, dict(size={"shortest_edge": 640, "longest_edge": 640}, do_pad=True)),
    "panoptic": (133, dict(size={"shortest_edge": 640, "longest_edge": 640}, do_pad=True)),
}


def build(task: str, directory: Path, device: str):
    num_labels, processor_kwargs = TASKS[task]
    config = transformers.EomtConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, num_blocks=3,
                                     num_queries=100 if task == "semantic" else 200, num_labels=num_labels)
    torch.manual_seed(0)
    model = transformers.EomtForUniversalSegmentation(config).eval()
    with torch.no_grad():  # confident enough for 0.8 thresholds to keep some segments
        model.class_predictor.weight.mul_(10)
        model.mask_head.fc3.weight.mul_(30)
        model.attn_mask_probs.zero_()
    model.save_pretrained(directory)
    processor = transformers.EomtImageProcessor(**processor_kwargs)
    processor.save_pretrained(directory)
    return model.to(device), processor


def theirs_pipeline(task, model, processor, path, device):
    image = Image.open(path).convert("RGB")
    inputs = processor(images=image, return_tensors="pt", device=device)
    with torch.inference_mode():
        outputs = model(**inputs)
    return outputs, theirs_post(task, processor, outputs, [(image.height, image.width)])


def theirs_post(task, processor, outputs, sizes):
    if task == "semantic":
        return processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)[0]
    if task == "instance":
        return processor.post_process_instance_segmentation(outputs, target_sizes=sizes)[0]["segmentation"]
    return processor.post_process_panoptic_segmentation(outputs, target_sizes=sizes)[0]["segmentation"]


def ours_post(task, segmenter, outputs, sizes):
    processor = segmenter.processor
    if task == "semantic":
        return processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)[0]
    if task == "instance":
        return processor.post_process_instance_segmentation(outputs, target_sizes=sizes)[0]["segmentation"]
    return processor.post_process_panoptic_segmentation(outputs, target_sizes=sizes,
                                                        stuff_classes=segmenter.stuff_classes)[0]["segmentation"]


def timed(fn, *args):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="examples/coffee.png")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args()
    size = Image.open(args.image).size
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {args.device}, "
          f"threads {torch.get_num_threads()}, image {args.image} ({size[0]}x{size[1]}), ViT-S at 640, "
          f"{args.runs} runs, median")
    print(f"{'task':9} {'eomt e2e ms':>12} {'hf e2e ms':>10} {'e2e ratio':>9} {'eomt post ms':>13} "
          f"{'hf post ms':>11} {'post ratio':>10}  same output")
    for task in args.tasks:
        with tempfile.TemporaryDirectory() as tmp:
            model, processor = build(task, Path(tmp), args.device)
            segmenter = Segmenter.from_pretrained(tmp, device=args.device, task=task)
        stuff = segmenter.stuff_classes
        e2e_ours, e2e_theirs, post_ours, post_theirs = [], [], [], []
        for run in range(args.runs + 1):  # the first run warms up
            t_ours, result = timed(segmenter.predict, args.image)
            t_theirs, (outputs, expected) = timed(theirs_pipeline, task, model, processor, args.image, args.device)
            sizes = [(size[1], size[0])]
            p_ours, _ = timed(ours_post, task, segmenter, outputs, sizes)
            p_theirs, _ = timed(theirs_post, task, processor, outputs, sizes)
            if run:
                e2e_ours.append(t_ours), e2e_theirs.append(t_theirs)
                post_ours.append(p_ours), post_theirs.append(p_theirs)
        if task == "panoptic" and stuff:  # transformers merges no stuff unless told which classes are stuff
            expected = processor.post_process_panoptic_segmentation(outputs, target_sizes=sizes,
                                                                    stuff_classes=stuff)[0]["segmentation"]
        same = torch.equal(result.segmentation.long(), expected.long().cpu())
        med = [statistics.median(x) * 1e3 for x in (e2e_ours, e2e_theirs, post_ours, post_theirs)]
        print(f"{task:9} {med[0]:12.1f} {med[1]:10.1f} {med[1] / med[0]:9.2f} {med[2]:13.1f} {med[3]:11.1f} "
              f"{med[3] / med[2]:10.2f}  {same}")


if __name__ == "__main__":
    main()
