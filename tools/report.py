"""`python tools/report.py ARGS` runs `megajepa-report ARGS` (megajepa/training/logs/report.py)."""
from megajepa.training.logs.report import main

if __name__ == "__main__":
    raise SystemExit(main())
