"""`python tools/preprocess_data.py ARGS` runs `megajepa-preprocess ARGS` (megajepa/cli/preprocess.py)."""
from megajepa.cli.preprocess import main

if __name__ == "__main__":
    raise SystemExit(main())
