"""SQuAD v1.1 exact match and F1, computed the way the official evaluation script does.

The official v1.1 script normalises both strings (lower case, drop ASCII
punctuation, drop the articles ``a``/``an``/``the``, collapse whitespace),
scores a prediction against every ground truth and keeps the best, and reports
the mean over questions times 100. F1 is over bags of normalised tokens; an
empty normalised prediction or answer scores 0 unless the token overlap is
non-empty (v1.1 has no special case for empty answers, unlike v2.0).

Examples:
    >>> squad_scores({"q1": "The Ghost"}, {"q1": ["ghost", "Hamlet's father"]})
    {'exact_match': 100.0, 'f1': 100.0, 'count': 1}
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Dict, Iterable, List, Mapping

__all__ = ["normalize_answer", "exact_match_score", "f1_score", "squad_scores"]

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower-case, strip ASCII punctuation and the articles a/an/the, collapse whitespace.

    Args:
        s: an answer string.

    Returns:
        The normalised string (order of steps as in the official script).
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-level F1 between normalised prediction and ground truth (bag of tokens).

    Args:
        prediction: predicted answer text.
        ground_truth: one reference answer text.

    Returns:
        F1 in [0, 1]; 0 when no token is shared.
    """
    pred_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(pred_tokens) & Counter(truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Iterable[str]]) -> Dict[str, float]:
    """Mean EM and F1 (x100) over the questions in ``references``.

    Args:
        predictions: question id -> predicted text.
        references: question id -> the list of accepted answer texts.

    Returns:
        ``{"exact_match", "f1", "count"}``. A question with no prediction scores 0
            (the official script prints a warning and does the same).

    Raises:
        ValueError: when ``references`` is empty or a question has no reference answer.
    """
    if not references:
        raise ValueError("squad_scores: no reference questions given")
    em = f1 = 0.0
    for qid, truths in references.items():
        truths: List[str] = list(truths)
        if not truths:
            raise ValueError(f"squad_scores: question {qid!r} has no reference answer")
        pred = predictions.get(qid)
        if pred is None:
            continue
        em += max(exact_match_score(pred, t) for t in truths)
        f1 += max(f1_score(pred, t) for t in truths)
    n = len(references)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n, "count": n}
