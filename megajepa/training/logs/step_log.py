"""output_dir/losses.jsonl: one line per step on rank 0 with the global loss terms at full precision
(json writes the shortest repr that reads back to the same float), so runs compare bitwise.

A resumed run appends: steps redone after a kill appear again, and the last line for a step wins.
"""
from __future__ import annotations

import json
import os


class StepLog:
    def __init__(self, output_dir: str, enabled: bool):
        self.file = None
        if enabled:
            os.makedirs(output_dir, exist_ok=True)
            self.file = open(os.path.join(output_dir, "losses.jsonl"), "a")

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()  # a killed run keeps every step it finished

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def read(path: str) -> dict[int, dict]:
    """step -> its last record."""
    with open(path) as f:
        return {r["step"]: r for r in map(json.loads, filter(str.strip, f))}
