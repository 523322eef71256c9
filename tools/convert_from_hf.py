"""`python tools/convert_from_hf.py ARGS` runs `megajepa-convert-from-hf ARGS` (megajepa/cli/convert_from_hf.py)."""
from megajepa.cli.convert_from_hf import run_and_exit

if __name__ == "__main__":
    run_and_exit()
