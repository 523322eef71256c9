"""`python tools/generate_data.py ARGS` runs `megajepa-generate-data ARGS` (megajepa/cli/generate_data.py)."""
from megajepa.cli.generate_data import main

if __name__ == "__main__":
    raise SystemExit(main())
