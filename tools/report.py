"""Plot a run: `python tools/report.py RUN_DIR` (or `megajepa-report RUN_DIR`) writes RUN_DIR/report.png
and RUN_DIR/report.html from losses.jsonl and the TensorBoard events."""
from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megajepa.training.logs.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
