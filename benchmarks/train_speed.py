"""Training step time and peak memory: eomt vs transformers on the same weights and batch.

    python benchmarks/train_speed.py [--configs tiny S] [--steps 5] [--device cpu]

A step = forward with targets (masked attention on, all mask probabilities 1, deep-supervised loss),
backward and an AdamW step. Each (library, config) runs in a fresh process so that its peak resident
memory (CPU) or peak allocated memory (CUDA) is its own. Printed: median step time, images/s, peak
memory and the ratio transformers / eomt (> 1: eomt is faster).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CONFIGS = {
    "tiny": dict(hidden_size=96, num_hidden_layers=6, num_attention_heads=3, num_blocks=2, num_queries=12,
                 image_size=128, num_labels=7, train_num_points=1024, batch=8),
    "S": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, num_blocks=3, num_queries=200,
              image_size=640, num_labels=133, batch=1),
    "B": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_blocks=3, num_queries=200,
              image_size=640, num_labels=133, batch=4),
    "L": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, num_blocks=4, num_queries=200,
              image_size=640, num_labels=133, batch=4),
}

WORKER = r"""
import json, resource, statistics, sys, tempfile, time
import torch, transformers
from eomt import EomtForUniversalSegmentation
library, name, steps, device, dtype = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
spec = json.loads(sys.argv[6])
batch = spec.pop("batch")
torch.manual_seed(0)
reference = transformers.EomtForUniversalSegmentation(transformers.EomtConfig(**spec))
if library == "eomt":
    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        model = EomtForUniversalSegmentation.from_pretrained(tmp)
else:
    model = reference
model.to(device).train()
model.attn_mask_probs.fill_(1.0)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
size = spec["image_size"]
g = torch.Generator().manual_seed(1)
pixels = torch.randn(batch, 3, size, size, generator=g).to(device)
masks, classes = [], []
for _ in range(batch):
    m = torch.zeros(6, size, size)
    for j in range(6):
        y, x = torch.randint(0, size // 2, (2,), generator=g).tolist()
        m[j, y:y + size // 3, x:x + size // 3] = 1
    masks.append(m.to(device)); classes.append(torch.randint(0, spec["num_labels"], (6,), generator=g).to(device))
autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bfloat16")
times = []
for step in range(steps + 1):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    with autocast:
        loss = model(pixel_values=pixels, mask_labels=masks, class_labels=classes).loss
    loss.backward()
    optimizer.step(); optimizer.zero_grad(set_to_none=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    if step:
        times.append(time.perf_counter() - start)
peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps({"ms": statistics.median(times) * 1e3, "batch": batch, "peak_mb": peak}))
"""


def run(library: str, name: str, steps: int, device: str, dtype: str) -> dict:
    result = subprocess.run([sys.executable, "-c", WORKER, library, name, str(steps), device, dtype,
                             json.dumps(CONFIGS[name])], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{library} {name} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "S"], choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, device {args.device}, {args.dtype}, {args.steps} timed steps (median)")
    print(f"{'config':6} {'batch':>5} {'eomt ms':>9} {'img/s':>7} {'peak MB':>8} {'hf ms':>9} {'img/s':>7} "
          f"{'peak MB':>8} {'ratio':>6}")
    for name in args.configs:
        ours = run("eomt", name, args.steps, args.device, args.dtype)
        theirs = run("transformers", name, args.steps, args.device, args.dtype)
        batch = ours["batch"]
        print(f"{name:6} {batch:5d} {ours['ms']:9.1f} {batch / ours['ms'] * 1e3:7.2f} {ours['peak_mb']:8.0f} "
              f"{theirs['ms']:9.1f} {batch / theirs['ms'] * 1e3:7.2f} {theirs['peak_mb']:8.0f} "
              f"{theirs['ms'] / ours['ms']:6.2f}")


if __name__ == "__main__":
    main()
