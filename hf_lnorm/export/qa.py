"""Extractive-QA evaluation for the main job: SQuAD-format data, span decoding, EM/F1, agreement.

The offline evaluation set is ``default_qa_file()`` (package data ``qa/dev.json``,
also importable as ``DEFAULT_QA_FILE``; SQuAD v1.1 format, 600 questions on four
plays held out from training, generated from public-domain Shakespeare by
``scripts/make_qa_data.py``; every answer is an exact span of its context). Any
SQuAD-format JSON file works.

Examples:
    ```python
    examples = load_squad(default_qa_file(), limit=8)
    enc = encode(tokenizer, examples, seq_len=128)
    spans = best_spans(start_logits, end_logits, enc)
    ```
"""

from __future__ import annotations

import collections
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np


def default_qa_file() -> Path:
    """The shipped evaluation questions (``hf_lnorm.resources.QA_EVAL_FILE``, held-out plays).

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    from ..resources import QA_EVAL_FILE, data_file

    return data_file(*QA_EVAL_FILE)


def __getattr__(name: str):
    # DEFAULT_QA_FILE is resolved on first use, from the installed package data
    if name == "DEFAULT_QA_FILE":
        return default_qa_file()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class QAExample:
    """One (question, context) pair; ``answers`` may be empty (unlabelled)."""

    id: str
    question: str
    context: str
    answers: List[str]


def load_squad(path: Union[str, Path], limit: Optional[int] = None) -> List[QAExample]:
    """Read a SQuAD-format JSON file (``{"data": [{"paragraphs": [{"context", "qas"}]}]}``).

    Args:
        path: the JSON file.
        limit: keep the first ``limit`` questions.

    Returns:
        ``QAExample`` list, file order.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not SQuAD-shaped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"QA file {str(path)!r} does not exist (expected SQuAD-format JSON)")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{str(path)!r} is not SQuAD format: expected a top-level object with a 'data' list")
    out: List[QAExample] = []
    for article in data["data"]:
        for para in article.get("paragraphs", []):
            for qa in para.get("qas", []):
                answers = [a["text"] for a in qa.get("answers", [])]
                out.append(QAExample(str(qa.get("id", len(out))), qa["question"], para["context"], answers))
                if limit is not None and len(out) >= limit:
                    return out
    return out


@dataclass
class Encoded:
    """Tokenized examples (one feature per example, context truncated) and what decoding needs."""

    inputs: Dict[str, np.ndarray]  # input_ids, attention_mask, token_type_ids: (N, seq) int64
    offsets: np.ndarray  # (N, seq, 2) char offsets into the context, (-1, -1) outside it
    examples: List[QAExample]


def encode(tokenizer, examples: Sequence[QAExample], seq_len: int) -> Encoded:
    """Tokenize (question, context) pairs to exactly ``seq_len`` tokens (pad / truncate the context)."""
    enc = tokenizer(
        [e.question for e in examples],
        [e.context for e in examples],
        truncation="only_second",
        max_length=seq_len,
        padding="max_length",
        return_offsets_mapping=True,
        return_tensors="np",
    )
    offsets = np.array(enc["offset_mapping"], dtype=np.int64)
    for i in range(len(examples)):
        seq_ids = enc.sequence_ids(i)
        for j, sid in enumerate(seq_ids):
            if sid != 1:
                offsets[i, j] = (-1, -1)
    inputs = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    return Encoded(inputs, offsets, list(examples))


def best_spans(start_logits: np.ndarray, end_logits: np.ndarray, enc: Encoded, max_answer_tokens: int = 30) -> List[Tuple[int, int]]:
    """Highest-scoring valid (start_token, end_token) per example: both in the context, start <= end.

    Returns:
        One ``(start, end)`` token pair per example.
    """
    spans = []
    for i in range(start_logits.shape[0]):
        valid = enc.offsets[i, :, 0] >= 0
        s = np.where(valid, start_logits[i], -np.inf)
        e = np.where(valid, end_logits[i], -np.inf)
        n = s.shape[0]
        scores = s[:, None] + e[None, :]
        band = np.triu(np.ones((n, n), dtype=bool)) & ~np.triu(np.ones((n, n), dtype=bool), k=max_answer_tokens)
        scores = np.where(band, scores, -np.inf)
        flat = int(np.argmax(scores))
        spans.append((flat // n, flat % n))
    return spans


def span_texts(spans: Sequence[Tuple[int, int]], enc: Encoded) -> List[str]:
    """The context substrings of token spans."""
    out = []
    for i, (a, b) in enumerate(spans):
        start, end = enc.offsets[i, a, 0], enc.offsets[i, b, 1]
        out.append(enc.examples[i].context[start:end] if start >= 0 and end >= start else "")
    return out


def _normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(pred: str, gold: str) -> float:
    p, g = _normalize(pred).split(), _normalize(gold).split()
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if not p or not g:
        return float(p == g)
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match_f1(predictions: Sequence[str], examples: Sequence[QAExample]) -> Tuple[Optional[float], Optional[float]]:
    """SQuAD v1.1 EM and F1 in percent (max over gold answers), over labelled examples; ``(None, None)`` if none."""
    em, f1, n = 0.0, 0.0, 0
    for pred, ex in zip(predictions, examples):
        if not ex.answers:
            continue
        n += 1
        em += max(float(_normalize(pred) == _normalize(a)) for a in ex.answers)
        f1 += max(_f1(pred, a) for a in ex.answers)
    if n == 0:
        return None, None
    return 100.0 * em / n, 100.0 * f1 / n


def span_agreement(a: Sequence[Tuple[int, int]], b: Sequence[Tuple[int, int]]) -> float:
    """Fraction of examples whose predicted (start, end) spans are identical."""
    if len(a) != len(b) or not a:
        raise ValueError(f"span lists must be non-empty and of equal length, got {len(a)} and {len(b)}")
    return sum(x == y for x, y in zip(a, b)) / len(a)
