"""`python tools/convert_to_hf.py ARGS` runs `megajepa-convert-to-hf ARGS` (megajepa/cli/convert_to_hf.py)."""
from megajepa.cli.convert_to_hf import main

if __name__ == "__main__":
    raise SystemExit(main())
