"""Two CPU processes (gloo) train like one process with the same global batch, and stay in sync."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch

from eomt.training.synthetic import make_synthetic_dataset

SCRIPT = """
import sys, torch
from eomt.training.recipe import load_recipe
from eomt.training.trainer import Trainer
data, out, devices, batch, result = sys.argv[1:6]
recipe = load_recipe("synthetic_tiny", [f"data.path={data}", f"train.out={out}", "train.max_steps=4",
                                        f"train.devices={devices}", f"train.batch_size={batch}",
                                        "train.strategy=ddp" if devices != "1" else "train.strategy=auto",
                                        "train.eval_every=1000", "train.checkpoint_every=1000"])
trainer = Trainer(recipe, progress=False)
summary = trainer.fit()
torch.save({"state": trainer.model.state_dict(), "losses": [h["loss"] for h in summary["history"]]}, result)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    data = make_synthetic_dataset(tmp_path / "data", num_train=32, num_val=4, seed=1)
    single = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(tmp_path / "one"), "1", "8",
                             str(tmp_path / "one.pt")], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "WORLD_SIZE": "2",
               "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0"}
        procs.append(subprocess.Popen([sys.executable, "-c", SCRIPT, str(data), str(tmp_path / "two"), "2", "4",
                                       str(tmp_path / f"rank{rank}.pt")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in ranks[0]["state"].items():
        torch.testing.assert_close(value, ranks[1]["state"][key], atol=0, rtol=0, msg=key)
    # Same images in the global batch; the losses differ only by the randomly sampled loss points.
    mean_first = (ranks[0]["losses"][0] + ranks[1]["losses"][0]) / 2
    assert abs(mean_first - one["losses"][0]) < 0.05 * one["losses"][0], (mean_first, one["losses"][0])
