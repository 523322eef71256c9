"""The command-line programs behind setup.py's console scripts (`megajepa-*`) and tools/*.py; each has main(argv) -> int."""
