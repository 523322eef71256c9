"""Scores for the megajepa task YAMLs: the same rules as megajepa/eval/metrics.py (one place), applied to
lm-eval's (reference, prediction) pairs."""
from megajepa.eval.metrics import first_word, score


def _one(metric: str, references, predictions) -> float:
    return float(score(metric, [{"prediction": predictions[0], "reference": references[0]}])["accuracy"])


def exact(references, predictions):
    return _one("exact", references, predictions)


def prefix(references, predictions):
    return _one("prefix", references, predictions)


def final_number(references, predictions):
    return _one("numeric", references, predictions)


def label(references, predictions):
    return float(first_word(predictions[0]) == first_word(references[0]))
