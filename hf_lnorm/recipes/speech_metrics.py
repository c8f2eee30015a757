"""Word error rate by edit distance (Levenshtein over words).

``WER = (substitutions + deletions + insertions) / reference words``, summed over
a corpus before dividing (so long utterances weigh more, as in sclite/jiwer).
Text is lower-cased and split on whitespace; nothing else is normalized.

Examples:
    >>> word_error_rate(["ace of spades"], ["ace of hearts"])
    0.3333333333333333
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple


def word_edits(reference: str, hypothesis: str) -> Tuple[int, int, int, int]:
    """``(substitutions, deletions, insertions, reference_words)`` of one minimum-edit alignment.

    Among alignments with the fewest edits, ties are broken towards substitutions, then deletions.
    """
    ref, hyp = reference.lower().split(), hypothesis.lower().split()
    # cost[j] = (edits, subs, dels, ins) aligning ref[:i] with hyp[:j]; one row at a time
    prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        row = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            e, s, d, n = prev[j - 1]
            same = ref[i - 1] == hyp[j - 1]
            best = (e + (0 if same else 1), s + (0 if same else 1), d, n)
            e, s, d, n = prev[j]
            best = min(best, (e + 1, s, d + 1, n), key=lambda c: c[0])
            e, s, d, n = row[j - 1]
            best = min(best, (e + 1, s, d, n + 1), key=lambda c: c[0])
            row.append(best)
        prev = row
    _, subs, dels, ins = prev[-1]
    return subs, dels, ins, len(ref)


def wer_details(references: Sequence[str], hypotheses: Sequence[str]) -> Dict[str, float]:
    """Corpus WER with its parts: ``wer``, ``substitutions``, ``deletions``, ``insertions``, ``words``, ``sentence_error_rate``.

    Raises:
        ValueError: the two lists differ in length, or the references have no words.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"got {len(references)} references but {len(hypotheses)} hypotheses; they must pair up")
    totals = [0, 0, 0, 0]
    wrong_sentences = 0
    for ref, hyp in zip(references, hypotheses):
        edits = word_edits(ref, hyp)
        totals = [t + e for t, e in zip(totals, edits)]
        wrong_sentences += sum(edits[:3]) > 0
    subs, dels, ins, words = totals
    if words == 0:
        raise ValueError("the references contain no words; WER is undefined")
    return {
        "wer": (subs + dels + ins) / words,
        "substitutions": subs,
        "deletions": dels,
        "insertions": ins,
        "words": words,
        "sentence_error_rate": wrong_sentences / len(references),
    }


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate (a fraction; can exceed 1 with many insertions)."""
    return wer_details(references, hypotheses)["wer"]


__all__ = ["wer_details", "word_edits", "word_error_rate"]
