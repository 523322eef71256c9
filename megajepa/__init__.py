"""megajepa: distributed pretraining for LLM-JEPA (next-token prediction + a JEPA embedding term)."""
__version__ = "0.1.0"
