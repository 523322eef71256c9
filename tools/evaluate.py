"""`python tools/evaluate.py ARGS` runs `megajepa-evaluate ARGS` (megajepa/cli/evaluate.py)."""
from megajepa.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
