"""Extractive QA features and answer decoding for BERT-style span models.

Long contexts are cut into overlapping windows (``max_seq_length`` tokens,
consecutive windows sharing ``doc_stride`` tokens), so every answer lies
whole inside at least one window. Training labels a window with the token
positions of the answer, or with the ``[CLS]`` position when the answer is
not fully inside that window. At evaluation each window's start/end logits
are decoded back to character spans through the tokenizer's offset mapping:
the ``n_best_size`` best starts and ends of every window are paired, pairs
that run backwards, leave the context or exceed ``max_answer_length`` tokens
are dropped, and the highest ``start + end`` logit sum over all windows of a
question wins.

Examples:
    ```python
    train_features = prepare_train_features(batch, tokenizer, 256, 64)
    eval_features = prepare_eval_features(eval_batch, tokenizer, 256, 64)
    preds, nbest = postprocess_qa_predictions(examples, eval_features, start_logits, end_logits)
    ```
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = ["prepare_train_features", "prepare_eval_features", "postprocess_qa_predictions"]


def _tokenize(examples: Mapping[str, List[Any]], tokenizer, max_seq_length: int, doc_stride: int, pad_to_max_length: bool):
    if doc_stride >= max_seq_length:
        raise ValueError(f"doc_stride ({doc_stride}) must be smaller than max_seq_length ({max_seq_length})")
    pad_right = tokenizer.padding_side == "right"
    questions = [q.lstrip() for q in examples["question"]]  # leading spaces only waste window room
    contexts = examples["context"]
    return tokenizer(
        questions if pad_right else contexts,
        contexts if pad_right else questions,
        truncation="only_second" if pad_right else "only_first",
        max_length=max_seq_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if pad_to_max_length else False,
    ), (1 if pad_right else 0)


def prepare_train_features(examples: Mapping[str, List[Any]], tokenizer, max_seq_length: int = 384, doc_stride: int = 128,
                           pad_to_max_length: bool = False) -> Dict[str, List[Any]]:
    """Tokenize a batch of SQuAD rows into training windows with start/end labels.

    Args:
        examples: a batch (``datasets`` ``map(batched=True)``) with ``question``, ``context``, ``answers``.
        tokenizer (transformers.PreTrainedTokenizerFast): a fast tokenizer (offset mappings are required).
        max_seq_length: tokens per window, question included.
        doc_stride: tokens shared by consecutive windows of one context.
        pad_to_max_length: pad every window to ``max_seq_length`` (else pad per batch later).

    Returns:
        Tokenizer outputs plus ``start_positions`` and ``end_positions`` (one entry per window).
    """
    enc, ctx_id = _tokenize(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offsets_all = enc.pop("offset_mapping")
    starts, ends = [], []
    for i, offsets in enumerate(offsets_all):
        ids = enc["input_ids"][i]
        cls_index = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        seq_ids = enc.sequence_ids(i)
        answers = examples["answers"][sample_map[i]]
        a_start = answers["answer_start"][0]
        a_end = a_start + len(answers["text"][0])
        ctx_tokens = [k for k, s in enumerate(seq_ids) if s == ctx_id]
        first, last = ctx_tokens[0], ctx_tokens[-1]
        if offsets[first][0] > a_start or offsets[last][1] < a_end:
            starts.append(cls_index)  # answer not (fully) in this window
            ends.append(cls_index)
            continue
        s = first
        while s <= last and offsets[s][0] <= a_start:
            s += 1
        e = last
        while e >= first and offsets[e][1] >= a_end:
            e -= 1
        starts.append(s - 1)
        ends.append(e + 1)
    enc["start_positions"] = starts
    enc["end_positions"] = ends
    return enc


def prepare_eval_features(examples: Mapping[str, List[Any]], tokenizer, max_seq_length: int = 384, doc_stride: int = 128,
                          pad_to_max_length: bool = False) -> Dict[str, List[Any]]:
    """Tokenize a batch of SQuAD rows into evaluation windows that remember where they came from.

    Args:
        examples: a batch with ``id``, ``question``, ``context``.
        tokenizer (transformers.PreTrainedTokenizerFast): as in ``prepare_train_features``.
        max_seq_length: as in ``prepare_train_features``.
        doc_stride: as in ``prepare_train_features``.
        pad_to_max_length: as in ``prepare_train_features``.

    Returns:
        Tokenizer outputs plus ``example_id`` and ``offset_mapping`` per window; offsets
            of tokens outside the context are ``None`` so they can never be chosen as an answer.
    """
    enc, ctx_id = _tokenize(examples, tokenizer, max_seq_length, doc_stride, pad_to_max_length)
    sample_map = enc.pop("overflow_to_sample_mapping")
    enc["example_id"] = []
    for i in range(len(enc["input_ids"])):
        seq_ids = enc.sequence_ids(i)
        enc["example_id"].append(examples["id"][sample_map[i]])
        enc["offset_mapping"][i] = [o if seq_ids[k] == ctx_id else None for k, o in enumerate(enc["offset_mapping"][i])]
    return enc


def postprocess_qa_predictions(examples: Sequence[Mapping[str, Any]], features: Sequence[Mapping[str, Any]],
                               start_logits: np.ndarray, end_logits: np.ndarray, n_best_size: int = 20,
                               max_answer_length: int = 30) -> Tuple[Dict[str, str], Dict[str, List[Dict[str, Any]]]]:
    """Decode window logits into one answer string per question.

    Args:
        examples: the original rows (``id``, ``context``).
        features: the windows from ``prepare_eval_features`` (``example_id``, ``offset_mapping``),
            in the same order as the logits rows.
        start_logits: ``(num_windows, seq_len)`` array; positions past a window's
            length (padding added when batches are concatenated) are ignored.
        end_logits: ``(num_windows, seq_len)`` array, as ``start_logits``.
        n_best_size: best start and end positions tried per window; also the length of the n-best lists.
        max_answer_length: longest answer allowed, in tokens.

    Returns:
        ``(predictions, nbest)``: question id -> answer text, and question id -> the best
            candidates ``{"text", "score", "start", "end"}`` sorted by score (character offsets).

    Raises:
        ValueError: the number of logit rows differs from the number of windows.
    """
    if len(features) != len(start_logits) or len(features) != len(end_logits):
        raise ValueError(f"{len(features)} windows but {len(start_logits)} start / {len(end_logits)} end logit rows")
    by_example: Dict[str, List[int]] = defaultdict(list)
    for i, f in enumerate(features):
        by_example[f["example_id"]].append(i)
    predictions: Dict[str, str] = {}
    nbest: Dict[str, List[Dict[str, Any]]] = {}
    for ex in examples:
        context = ex["context"]
        cands = []
        for fi in by_example.get(ex["id"], []):
            offsets = features[fi]["offset_mapping"]
            s_log, e_log = np.asarray(start_logits[fi]), np.asarray(end_logits[fi])
            top_s = np.argsort(s_log)[::-1][:n_best_size]
            top_e = np.argsort(e_log)[::-1][:n_best_size]
            for s in top_s:
                if s >= len(offsets) or offsets[s] is None:
                    continue
                for e in top_e:
                    if e >= len(offsets) or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    c0, c1 = offsets[s][0], offsets[e][1]
                    cands.append({"text": context[c0:c1], "score": float(s_log[s] + e_log[e]), "start": int(c0), "end": int(c1)})
        cands.sort(key=lambda c: c["score"], reverse=True)
        nbest[ex["id"]] = cands[:n_best_size]
        predictions[ex["id"]] = cands[0]["text"] if cands else ""
    return predictions, nbest
