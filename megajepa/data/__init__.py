"""Data path: records -> views -> token ids -> packed rows, in a deterministic, resumable order."""
