"""Evaluation: answer metrics, closed-book / open-book generation, perplexity, retention."""

from pit.eval.metrics import answer_recall, exact_match, f1, normalize, rouge_l, score

__all__ = ["answer_recall", "exact_match", "f1", "normalize", "rouge_l", "score"]
