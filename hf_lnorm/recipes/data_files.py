"""Load and validate the local data files the recipe scripts read.

Every problem is reported as one :class:`DataFileError` (a ``ValueError``)
whose message starts with the file path and says what is wrong and what is
accepted, e.g. ``data/x.json: question 'q7': answer 'Ham' is not the span
context[12:15] ('Pol')``.

Accepted QA files:
  * official SQuAD v1.1 JSON: ``{"data": [{"title", "paragraphs": [{"context",
    "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}``;
  * Hugging Face ``squad`` rows, as a JSON list or JSON lines: ``{"id", "title",
    "context", "question", "answers": {"text": [...], "answer_start": [...]}}``.

Accepted translation files: JSON lines with the two language keys at top level
(``{"en": ..., "es": ...}``, the layout of ``data/bible_en_es*.jsonl``) or under
``"translation"`` (the Hugging Face ``translation`` feature).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

__all__ = ["DataFileError", "load_squad_file", "load_translation_file"]


class DataFileError(ValueError):
    """A data file is missing or malformed; the message names the file and the problem."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _read_json_or_jsonl(path: str, what: str) -> Any:
    if not os.path.isfile(path):
        raise DataFileError(path, f"{what} file not found")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise DataFileError(path, f"{what} file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as whole_err:
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                if lineno == 1:
                    raise DataFileError(path, f"not valid JSON or JSON lines ({whole_err.msg} at line {whole_err.lineno})")
                raise DataFileError(path, f"line {lineno} is not valid JSON ({err.msg})")
        return rows


def _check_answer(path: str, qid: str, context: str, text: Any, start: Any) -> None:
    if not isinstance(text, str) or not text:
        raise DataFileError(path, f"question {qid!r}: answer text must be a non-empty string, got {text!r}")
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise DataFileError(path, f"question {qid!r}: answer_start must be a non-negative integer, got {start!r}")
    span = context[start : start + len(text)]
    if span != text:
        where = context.find(text)
        hint = f"; the text occurs at offset {where}" if where >= 0 else "; the text does not occur in the context at all"
        raise DataFileError(path, f"question {qid!r}: answer {text!r} is not the span context[{start}:{start + len(text)}] ({span!r}){hint}")


def _row(path: str, qid: Any, title: Any, context: Any, question: Any, texts: List[Any], starts: List[Any]) -> Dict[str, Any]:
    if not isinstance(qid, (str, int)) or qid == "":
        raise DataFileError(path, f"a question has no 'id' (got {qid!r})")
    qid = str(qid)
    if not isinstance(context, str) or not context.strip():
        raise DataFileError(path, f"question {qid!r}: 'context' must be a non-empty string")
    if not isinstance(question, str) or not question.strip():
        raise DataFileError(path, f"question {qid!r}: 'question' must be a non-empty string")
    if len(texts) != len(starts):
        raise DataFileError(path, f"question {qid!r}: {len(texts)} answer texts but {len(starts)} answer_start values")
    if not texts:
        raise DataFileError(path, f"question {qid!r}: no answer span (unanswerable SQuAD v2 questions are not supported; every question needs an answer in its context)")
    for t, s in zip(texts, starts):
        _check_answer(path, qid, context, t, s)
    return {"id": qid, "title": str(title or ""), "context": context, "question": question,
            "answers": {"text": list(texts), "answer_start": list(starts)}}


def load_squad_file(path: str) -> List[Dict[str, Any]]:
    """Read a SQuAD-format file and check that every answer is an exact span of its context.

    Args:
        path: a ``.json`` (official nested layout or a list of rows) or ``.jsonl`` file.

    Returns:
        Rows in the Hugging Face ``squad`` layout: ``id, title, context, question,
            answers={"text": [...], "answer_start": [...]}``.

    Raises:
        DataFileError: missing/empty file, invalid JSON, a layout that is not SQuAD,
            a missing field, a question without answers, an answer that is not
            the span at its ``answer_start``, or a duplicated question id.
    """
    obj = _read_json_or_jsonl(path, "SQuAD")
    rows: List[Dict[str, Any]] = []
    if isinstance(obj, dict) and "data" not in obj and "context" in obj:
        obj = [obj]  # a JSON-lines file with a single row
    if isinstance(obj, dict) and "data" in obj:
        if not isinstance(obj["data"], list):
            raise DataFileError(path, "not SQuAD format: 'data' must be a list of articles")
        for ai, article in enumerate(obj["data"]):
            if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
                raise DataFileError(path, f"not SQuAD format: article {ai} has no 'paragraphs' list")
            for pi, para in enumerate(article["paragraphs"]):
                if not isinstance(para, dict) or "context" not in para or not isinstance(para.get("qas"), list):
                    raise DataFileError(path, f"not SQuAD format: article {ai} paragraph {pi} needs 'context' and a 'qas' list")
                for qa in para["qas"]:
                    if not isinstance(qa, dict):
                        raise DataFileError(path, f"not SQuAD format: article {ai} paragraph {pi} has a qas entry that is not an object")
                    if qa.get("is_impossible"):
                        raise DataFileError(path, f"question {qa.get('id')!r}: no answer span (is_impossible=true); SQuAD v2 unanswerable questions are not supported")
                    answers = qa.get("answers")
                    if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
                        raise DataFileError(path, f"question {qa.get('id')!r}: 'answers' must be a list of {{'text', 'answer_start'}} objects")
                    rows.append(_row(path, qa.get("id"), article.get("title"), para["context"], qa.get("question"),
                                     [a.get("text") for a in answers], [a.get("answer_start") for a in answers]))
    elif isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        for i, r in enumerate(obj):
            answers = r.get("answers")
            if not {"context", "question", "answers"} <= set(r) or not isinstance(answers, dict):
                raise DataFileError(path, f"not SQuAD format: row {i} needs 'id', 'context', 'question' and 'answers' "
                                          f"{{'text': [...], 'answer_start': [...]}} (found keys {sorted(r)})")
            texts, starts = answers.get("text"), answers.get("answer_start")
            if not isinstance(texts, list) or not isinstance(starts, list):
                raise DataFileError(path, f"row {i}: 'answers' must hold lists 'text' and 'answer_start'")
            rows.append(_row(path, r.get("id"), r.get("title"), r["context"], r["question"], texts, starts))
    else:
        kind = type(obj).__name__ if not isinstance(obj, dict) else f"object with keys {sorted(obj)[:8]}"
        raise DataFileError(path, f"not SQuAD format: expected an object with a 'data' list (SQuAD v1.1) or a list of "
                                  f"rows with 'context', 'question', 'answers', got {kind}")
    if not rows:
        raise DataFileError(path, "no questions found")
    seen = set()
    for r in rows:
        if r["id"] in seen:
            raise DataFileError(path, f"question id {r['id']!r} appears more than once")
        seen.add(r["id"])
    return rows


def load_translation_file(path: str, source_lang: str, target_lang: str, extra_keys: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Read a JSON-lines translation file into ``{"translation": {src: ..., tgt: ...}, ...}`` rows.

    Args:
        path: JSON lines (or a JSON list) file.
        source_lang: the source language key, e.g. ``"en"``.
        target_lang: the target language key, e.g. ``"es"``.
        extra_keys: top-level keys to keep when present (e.g. ``["id", "book"]``).

    Returns:
        One dict per pair with a ``translation`` dict and the kept extra keys.

    Raises:
        DataFileError: missing file, invalid JSON, a row without both languages or with an empty text.
    """
    obj = _read_json_or_jsonl(path, "translation")
    if isinstance(obj, dict):
        obj = [obj]
    if not isinstance(obj, list) or not obj:
        raise DataFileError(path, "expected JSON lines of translation pairs")
    rows = []
    for i, r in enumerate(obj, start=1):
        pair = r.get("translation", r) if isinstance(r, dict) else None
        if not isinstance(pair, dict) or source_lang not in pair or target_lang not in pair:
            keys = sorted(pair) if isinstance(pair, dict) else type(r).__name__
            raise DataFileError(path, f"row {i} has no {source_lang!r}/{target_lang!r} pair (found {keys}); "
                                      f"accepted: {{{source_lang!r}: ..., {target_lang!r}: ...}} or {{'translation': {{...}}}}")
        src, tgt = pair[source_lang], pair[target_lang]
        if not isinstance(src, str) or not isinstance(tgt, str) or not src.strip() or not tgt.strip():
            raise DataFileError(path, f"row {i}: {source_lang!r} and {target_lang!r} must be non-empty strings")
        row = {"translation": {source_lang: src, target_lang: tgt}}
        for k in extra_keys or []:
            if isinstance(r, dict) and k in r:
                row[k] = r[k]
        rows.append(row)
    return rows
