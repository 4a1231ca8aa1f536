"""The offline learning check: train the tiny recipe on synthetic shapes and print the PQ curve.

    python benchmarks/synthetic_learning.py [--train 300] [--val 50] [--eval-every 100] [--out runs/synthetic_curve]

Writes the synthetic dataset, trains `synthetic_tiny` (CPU) evaluating held-out PQ every N steps, and
prints step, training loss and validation PQ, then the final model's PQ over the whole val split.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from eomt.evaluation.runner import evaluate
from eomt.training.recipe import load_recipe
from eomt.training.synthetic import make_synthetic_dataset
from eomt.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--val", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--out", default="runs/synthetic_curve")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. train.epochs=30")
    args = parser.parse_args()
    out = Path(args.out)
    data = make_synthetic_dataset(out / "data", num_train=args.train, num_val=args.val)
    recipe = load_recipe("synthetic_tiny", [f"data.path={data}", f"train.out={out / 'run'}",
                                            f"train.eval_every={args.eval_every}", f"train.eval_limit={args.val}",
                                            *args.overrides])
    start = time.perf_counter()
    summary = Trainer(recipe, progress=False).fit()
    minutes = (time.perf_counter() - start) / 60
    logs = sorted((out / "run" / "logs").glob("version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    with open(logs[-1]) as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("val/PQ")]
    print(f"{'step':>6} {'val PQ':>7}")
    for row in rows:
        print(f"{int(float(row['step'])):6d} {float(row['val/PQ']):7.2f}")
    final = evaluate(summary["final"], data, "coco_panoptic", progress=False)
    print(f"trained {summary['steps']} steps in {minutes:.1f} min on CPU; final model PQ on {args.val} held-out "
          f"images: {final['metrics']['PQ']:.2f} (things {final['metrics']['Things']['PQ']:.2f}, "
          f"stuff {final['metrics']['Stuff']['PQ']:.2f})")


if __name__ == "__main__":
    main()
