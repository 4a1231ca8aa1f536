"""The processes of a job, started by Lightning Fabric as training starts them.

`start(devices, num_nodes, device)` returns the calling process's place in the job. With one device on
one node it is the calling process alone, on `device`. Otherwise Fabric (DDP strategy) launches the
other local processes (re-running the command), or joins the ones torchrun or SLURM started, and
sets up torch.distributed (gloo on CPU, NCCL on GPUs); every process then gets its own device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Processes:
    """This process's rank among `world_size`, its device, and the Fabric that joined them (or None)."""

    rank: int
    world_size: int
    device: torch.device | None
    fabric: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.fabric is not None:
            self.fabric.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj` (picklable), in rank order, on every process."""
        if self.world_size == 1:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


def check_devices(devices: int, num_nodes: int, device: str | None) -> None:
    """Validate before anything is launched (one-line errors, no traceback)."""
    from ..config import ConfigError

    for name, value in (("devices", devices), ("num_nodes", num_nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"`{name}` must be a positive whole number, got {value!r}")
    if (devices > 1 or num_nodes > 1) and device not in (None, "cpu", "cuda"):
        raise ConfigError(f"`device={device}` names one device; with `devices`/`num_nodes` above 1 use cpu or "
                          "cuda (each process takes its own device)")


_started: dict[tuple[str, int, int], Processes] = {}  # a second job in the same script joins the same processes


def start(devices: int = 1, num_nodes: int = 1, device: str | None = None) -> Processes:
    """Join (or launch) the job's processes; see the module docstring."""
    check_devices(devices, num_nodes, device)
    if devices == 1 and num_nodes == 1:
        return Processes(0, 1, torch.device(device) if device else None)
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available here; use `device='cpu'`")
    accelerator = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = (accelerator, devices, num_nodes)
    if key not in _started:
        from lightning_fabric import Fabric

        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="ddp")
        fabric.launch()
        _started[key] = Processes(fabric.global_rank, fabric.world_size, fabric.device, fabric)
    return _started[key]
