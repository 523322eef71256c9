"""`python tools/analyze_embeddings.py ARGS` runs `megajepa-analyze ARGS` (megajepa/cli/analyze.py)."""
from megajepa.cli.analyze import main

if __name__ == "__main__":
    raise SystemExit(main())
