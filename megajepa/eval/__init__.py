"""Evaluation: model-free scoring (metrics, regex language equality) and generation."""
