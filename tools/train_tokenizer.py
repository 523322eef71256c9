"""`python tools/train_tokenizer.py ARGS` runs `megajepa-train-tokenizer ARGS` (megajepa/cli/train_tokenizer.py)."""
from megajepa.cli.train_tokenizer import main

if __name__ == "__main__":
    raise SystemExit(main())
