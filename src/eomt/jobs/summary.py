"""What a prediction job did: per-process counts and their sum (printed, and saved as OUT/summary.json)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ProcessCounts:
    """One process's share: images segmented (done), found complete (skipped), failed, and its time."""

    rank: int
    done: int = 0
    skipped: int = 0
    files_written: int = 0
    seconds: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)

    def fail(self, image: Path | str, reason: str) -> None:
        self.failures.append({"image": str(image), "reason": reason})

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0


@dataclass
class PredictSummary:
    """The whole job: `images` planned, of which `done` + `skipped` + failed; sources that gave no image
    are failures too. `images_per_second` is all processes' images over the slowest process's time."""

    task: str
    out: str
    images: int
    done: int
    skipped: int
    files_written: int
    failures: list[dict[str, str]]
    processes: list[ProcessCounts]
    rank: int = 0  # of the process holding this copy (every process gets the summary; process 0 prints it)
    non_images: int = 0  # files of the folders searched that are not images (not read)
    output_folders: list[str] = field(default_factory=list)  # eomt output folders inside the sources, not searched

    @classmethod
    def combine(cls, task: str, out: str, images: int, processes: list[ProcessCounts],
                source_failures: list[dict[str, str]], non_images: int = 0,
                output_folders: list[str] | None = None) -> PredictSummary:
        failures = list(source_failures) + sorted((f for p in processes for f in p.failures),
                                                  key=lambda f: f["image"])
        return cls(task, out, images, sum(p.done for p in processes), sum(p.skipped for p in processes),
                   sum(p.files_written for p in processes), failures, processes, non_images=non_images,
                   output_folders=list(output_folders or []))

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def seconds(self) -> float:
        return max((p.seconds for p in self.processes), default=0.0)

    @property
    def images_per_second(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "out": self.out, "images": self.images, "done": self.done,
                "skipped": self.skipped, "failed": self.failed, "files_written": self.files_written,
                "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 3),
                "non_image_files": self.non_images, "output_folders_left_out": self.output_folders,
                "failures": self.failures,
                "processes": [{**{k: v for k, v in asdict(p).items() if k != "failures"},
                               "seconds": round(p.seconds, 3), "images_per_second": round(p.images_per_second, 3),
                               "failed": len(p.failures)} for p in self.processes]}

    def lines(self) -> list[str]:
        """The report printed at the end of `eomt predict`."""
        left_out = [f"{self.non_images} non-image file(s)"] if self.non_images else []
        if self.output_folders:
            left_out.append(f"{len(self.output_folders)} eomt output folder(s) ({', '.join(self.output_folders[:2])}"
                            f"{', ...' if len(self.output_folders) > 2 else ''})")
        lines = [f"segmented {self.done} image(s), skipped {self.skipped} already done, {self.failed} failed; "
                 f"{self.files_written} file(s) written to {self.out}"
                 + (f"; not read: {' and '.join(left_out)}" if left_out else "")]
        if len(self.processes) > 1:
            lines += [f"  process {p.rank}: {p.done} image(s) in {p.seconds:.1f} s, {p.images_per_second:.2f} images/s"
                      for p in self.processes]
        lines.append(f"  total: {self.done} image(s) in {self.seconds:.1f} s, {self.images_per_second:.2f} images/s "
                     f"({len(self.processes)} process{'es' if len(self.processes) > 1 else ''})")
        if self.failures:
            lines.append(f"{self.failed} failed:")
            lines += [f"  {f['image']}: {f['reason']}" for f in self.failures]
        return lines
