"""Hugging Face interop: config and state-dict mapping between megajepa and transformers."""
