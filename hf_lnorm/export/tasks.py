"""What ``hf-lnorm optimize`` needs to know per task: model class, outputs, data, encoding and quality figures.

Three tasks, one ``Task`` object each in ``TASKS``:

    question-answering     extractive QA on SQuAD-format questions: exact match, F1 and span agreement
    text-classification    one label per text: accuracy (where the texts carry labels) and argmax agreement
    token-classification   one label per token: argmax agreement over the real tokens

Question answering reads SQuAD-format JSON (``hf_lnorm.export.qa``). The two classification tasks read
JSONL texts (one object per line with ``text`` and an optional ``label``); without one they use the
contexts of the shipped QA files split into sentences: evaluation texts from the held-out file,
calibration texts from the training-split file.

Examples:
    ```python
    from hf_lnorm.export.tasks import get_task

    task = get_task("text-classification")
    texts = task.read("sentences.jsonl", limit=200)
    enc = task.encode(tokenizer, texts, seq_len=128)
    quality = task.quality(outputs, reference_outputs, enc, model.config)  # outputs: a route's runner on enc.inputs
    ```
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

Outputs = Tuple[np.ndarray, ...]

__all__ = ["InputError", "TASKS", "Task", "TextEncoded", "TextExample", "get_task", "sentences_of"]


class InputError(ValueError):
    """A data file given on the command line cannot be used (a usage error: exit 2)."""


@dataclass
class TextExample:
    """One text of a classification task; ``label`` (a class index or a label name) may be absent."""

    id: str
    text: str
    label: Optional[Union[int, str]] = None


@dataclass
class TextEncoded:
    """Tokenized texts: the model inputs, which positions are real tokens, and the texts."""

    inputs: Dict[str, np.ndarray]  # input_ids, attention_mask, token_type_ids: (N, seq) int64
    real: np.ndarray  # (N, seq) bool: attention mask and not a special token
    examples: List[TextExample]


def sentences_of(path: Union[str, Path], limit: Optional[int] = None) -> List[TextExample]:
    """The contexts of a SQuAD-format file split into sentences (after ``.``, ``!`` or ``?``), each context once.

    Args:
        path: SQuAD-format JSON.
        limit: keep the first ``limit`` sentences.

    Returns:
        Unlabelled ``TextExample`` list with ids ``"<file stem>-<context>-<sentence>"``.

    Raises:
        FileNotFoundError, ValueError: as ``hf_lnorm.export.qa.load_squad``.
    """
    from .qa import load_squad

    out: List[TextExample] = []
    seen = set()
    for example in load_squad(path):
        if example.context in seen:
            continue
        seen.add(example.context)
        for j, sentence in enumerate(s.strip() for s in re.split(r"(?<=[.!?])\s+", example.context)):
            if len(sentence.split()) < 2:
                continue
            out.append(TextExample(f"{Path(path).stem}-{len(seen) - 1}-{j}", sentence))
            if limit is not None and len(out) >= limit:
                return out
    return out


def read_texts(path: Union[str, Path], limit: Optional[int] = None) -> List[TextExample]:
    """Texts of a JSONL file: one object per line with ``text`` (a string) and optionally ``label`` and ``id``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line is not such an object (names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"texts file {str(path)!r} does not exist (expected JSONL with a 'text' per line)")
    out: List[TextExample] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number} is not JSON ({exc.msg}); expected an object with a 'text'") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f"line {number} has no 'text' string; expected an object like "
                                 '{"text": "...", "label": 1}')
            label = row.get("label")
            if label is not None and not isinstance(label, (int, str)):
                raise ValueError(f"line {number}: 'label' must be a class index or a label name, got {label!r}")
            out.append(TextExample(str(row.get("id", len(out))), row["text"], label))
            if limit is not None and len(out) >= limit:
                break
    return out


class Task:
    """One task of the job. Subclasses fill in the data, the encoding and the quality figures.

    Attributes:
        name: the ``--task`` value.
        auto_class: the ``transformers`` Auto class that loads the model.
        optimum_class: Optimum's ONNX Runtime class for the load hint.
        output_names: the outputs a route's runner returns, in order.
        seq_outputs: those of ``output_names`` whose second axis is the sequence (a graph that skips the batch's
            trailing padding pads them back to the input length).
        pipeline: the ``transformers.pipeline`` task name.
    """

    name = ""
    auto_class = ""
    optimum_class = ""
    output_names: Tuple[str, ...] = ("logits",)
    seq_outputs: Tuple[str, ...] = ()
    pipeline = ""
    has_f1 = False

    def read(self, path: Union[str, Path], limit: Optional[int] = None) -> list:
        """The examples of a data file (SQuAD JSON, or for classification also JSONL texts)."""
        raise NotImplementedError

    def encode(self, tokenizer, examples: Sequence, seq_len: int):
        """Tokenize to exactly ``seq_len`` tokens; the result has ``inputs`` (int64 numpy arrays)."""
        raise NotImplementedError

    def quality(self, outputs: Outputs, reference: Outputs, enc, config) -> Dict[str, Optional[float]]:
        """``agreement`` with the reference outputs (0..1) and the task's figures (``f1``, ``exact_match`` or
        ``accuracy``, in percent; None where the data has no labels)."""
        raise NotImplementedError

    def answers(self, outputs: Outputs, enc, config) -> Dict[str, Any]:
        """The predicted answer per example id (JSON-ready): answer text, label name, or one label per real token."""
        raise NotImplementedError


class QuestionAnswering(Task):
    """Extractive QA: SQuAD-format questions; EM/F1 against the reference answers, span agreement with fp32."""

    name = "question-answering"
    auto_class = "AutoModelForQuestionAnswering"
    optimum_class = "ORTModelForQuestionAnswering"
    output_names = ("start_logits", "end_logits")
    seq_outputs = ("start_logits", "end_logits")
    pipeline = "question-answering"
    has_f1 = True

    def read(self, path, limit=None):
        from .qa import load_squad

        return load_squad(path, limit=limit)

    def encode(self, tokenizer, examples, seq_len):
        from .qa import encode

        return encode(tokenizer, examples, seq_len)

    def quality(self, outputs, reference, enc, config):
        from .qa import best_spans, exact_match_f1, span_agreement, span_texts

        spans = best_spans(outputs[0], outputs[1], enc)
        em, f1 = exact_match_f1(span_texts(spans, enc), enc.examples)
        agreement = span_agreement(spans, best_spans(reference[0], reference[1], enc))
        return {"agreement": agreement, "f1": f1, "exact_match": em, "accuracy": None}

    def answers(self, outputs, enc, config):
        from .qa import best_spans, span_texts

        texts = span_texts(best_spans(outputs[0], outputs[1], enc), enc)
        return {e.id: t for e, t in zip(enc.examples, texts)}


class _Classification(Task):
    def read(self, path, limit=None):
        path = Path(path)
        if path.suffix == ".jsonl":
            return read_texts(path, limit)
        return sentences_of(path, limit)

    def encode(self, tokenizer, examples, seq_len):
        enc = tokenizer([e.text for e in examples], truncation=True, max_length=seq_len, padding="max_length",
                        return_special_tokens_mask=True, return_tensors="np")
        inputs = {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        real = inputs["attention_mask"].astype(bool) & ~np.asarray(enc["special_tokens_mask"], dtype=bool)
        return TextEncoded(inputs, real, list(examples))

    @staticmethod
    def _label_name(config, index: int) -> str:
        names = getattr(config, "id2label", None) or {}
        return str(names.get(index, names.get(str(index), index)))


class TextClassification(_Classification):
    """One label per text: accuracy where the texts carry labels, argmax agreement with fp32."""

    name = "text-classification"
    auto_class = "AutoModelForSequenceClassification"
    optimum_class = "ORTModelForSequenceClassification"
    pipeline = "text-classification"

    def quality(self, outputs, reference, enc, config):
        pred, ref = outputs[0].argmax(-1), reference[0].argmax(-1)
        labelled = [(i, self._label_index(e.label, config)) for i, e in enumerate(enc.examples) if e.label is not None]
        accuracy = 100.0 * float(np.mean([pred[i] == y for i, y in labelled])) if labelled else None
        return {"agreement": float(np.mean(pred == ref)), "f1": None, "exact_match": None, "accuracy": accuracy}

    def answers(self, outputs, enc, config):
        return {e.id: self._label_name(config, int(p)) for e, p in zip(enc.examples, outputs[0].argmax(-1))}

    @staticmethod
    def _label_index(label: Union[int, str], config) -> int:
        if isinstance(label, int):
            return label
        names = getattr(config, "label2id", None) or {}
        if label not in names:
            raise InputError(f"label {label!r} is not one of the model's labels {sorted(names)}")
        return int(names[label])


class TokenClassification(_Classification):
    """One label per token: argmax agreement with fp32 over the real tokens (no padding, no special tokens)."""

    name = "token-classification"
    auto_class = "AutoModelForTokenClassification"
    optimum_class = "ORTModelForTokenClassification"
    seq_outputs = ("logits",)
    pipeline = "token-classification"

    def quality(self, outputs, reference, enc, config):
        same = outputs[0].argmax(-1) == reference[0].argmax(-1)
        return {"agreement": float(same[enc.real].mean()), "f1": None, "exact_match": None, "accuracy": None}

    def answers(self, outputs, enc, config):
        pred = outputs[0].argmax(-1)
        return {e.id: [self._label_name(config, int(p)) for p in pred[i][enc.real[i]]] for i, e in enumerate(enc.examples)}


TASKS: Dict[str, Task] = {t.name: t for t in (QuestionAnswering(), TextClassification(), TokenClassification())}


def get_task(name: str) -> Task:
    """The ``Task`` called ``name``.

    Raises:
        ValueError: an unknown name (lists the accepted ones).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; accepted: {', '.join(TASKS)}")
    return TASKS[name]
