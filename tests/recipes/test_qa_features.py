"""Sliding-window features and offset-mapping answer decoding."""

import numpy as np
import pytest

from hf_lnorm.recipes.qa import postprocess_qa_predictions, prepare_eval_features, prepare_train_features
from hf_lnorm.recipes.squad_metrics import normalize_answer

CONTEXT = ("Ber: Who's there? Fran: Nay, answer me: stand, and unfold yourself. Ber: Long live the king! "
           "Fran: Bernardo? Ber: He. Fran: You come most carefully upon your hour. Ber: 'Tis now struck twelve; "
           "get thee to bed, Francisco. Fran: For this relief much thanks: 'tis bitter cold, and I am sick at heart.")


def _batch():
    answers = ["Francisco", "Bernardo", "bitter cold"]
    questions = ["Who is sent to bed?", "Whom does Fran name?", "How is the weather?"]
    return {"id": ["a", "b", "c"], "question": questions, "context": [CONTEXT] * 3,
            "answers": [{"text": [a], "answer_start": [CONTEXT.index(a)]} for a in answers]}


def test_train_windows_label_the_answer_tokens(minilm_tokenizer):
    batch = _batch()
    feats = prepare_train_features(batch, minilm_tokenizer, max_seq_length=40, doc_stride=16)
    n = len(feats["input_ids"])
    assert n > 3, "a 40-token window must split this context"
    assert all(len(ids) <= 40 for ids in feats["input_ids"])
    found = set()
    for i in range(n):
        s, e = feats["start_positions"][i], feats["end_positions"][i]
        if s == 0:
            assert e == 0
            continue
        text = minilm_tokenizer.decode(feats["input_ids"][i][s:e + 1])
        found.add(normalize_answer(text))
    assert found == {"francisco", "bernardo", "bitter cold"}


def test_doc_stride_must_be_smaller_than_window(minilm_tokenizer):
    with pytest.raises(ValueError, match="doc_stride"):
        prepare_train_features(_batch(), minilm_tokenizer, max_seq_length=32, doc_stride=32)


def _eval_setup(tok, max_len=40, stride=16):
    batch = _batch()
    feats = prepare_eval_features(batch, tok, max_seq_length=max_len, doc_stride=stride)
    features = [{"example_id": feats["example_id"][i], "offset_mapping": feats["offset_mapping"][i]} for i in range(len(feats["input_ids"]))]
    examples = [{"id": batch["id"][k], "context": batch["context"][k]} for k in range(3)]
    return batch, feats, features, examples


def test_postprocess_recovers_span_from_a_later_window(minilm_tokenizer):
    batch, feats, features, examples = _eval_setup(minilm_tokenizer)
    width = max(len(x) for x in feats["input_ids"])
    start = np.full((len(features), width), -5.0)
    end = np.full((len(features), width), -5.0)
    # For example "c" ('bitter cold'), put the peak in the LAST window that contains it; question tokens get
    # even higher logits and must be ignored because their offsets are None.
    target = CONTEXT.index("bitter cold")
    chosen = None
    for i, f in enumerate(features):
        if f["example_id"] != "c":
            continue
        start[i, 1] = end[i, 1] = 50.0  # a question token
        offs = f["offset_mapping"]
        s = [k for k, o in enumerate(offs) if o is not None and o[0] == target]
        e = [k for k, o in enumerate(offs) if o is not None and o[1] == target + len("bitter cold")]
        if s and e:
            chosen = (i, s[0], e[0])
    assert chosen is not None
    i, s, e = chosen
    start[i, s], end[i, e] = 10.0, 9.0
    preds, nbest = postprocess_qa_predictions(examples, features, start, end, n_best_size=5, max_answer_length=10)
    assert preds["c"] == "bitter cold"
    assert nbest["c"][0]["start"] == target
    scores = [c["score"] for c in nbest["c"]]
    assert scores == sorted(scores, reverse=True) and len(scores) <= 5


def test_max_answer_length_rejects_long_spans(minilm_tokenizer):
    batch, feats, features, examples = _eval_setup(minilm_tokenizer, max_len=128, stride=32)
    assert len(features) == 3  # one window per question
    width = len(feats["input_ids"][0])
    start = np.zeros((3, width))
    end = np.zeros((3, width))
    offs = features[0]["offset_mapping"]
    ctx = [k for k, o in enumerate(offs) if o is not None]
    start[0, ctx[0]] = 20.0   # best start at the first context token
    end[0, ctx[-1]] = 20.0    # best end at the last: a span far longer than 5 tokens
    end[0, ctx[2]] = 5.0      # a short span is the best allowed one
    preds, _ = postprocess_qa_predictions(examples, features, start, end, n_best_size=20, max_answer_length=5)
    assert preds["a"] == CONTEXT[offs[ctx[0]][0]:offs[ctx[2]][1]]
    preds_long, _ = postprocess_qa_predictions(examples, features, start, end, n_best_size=20, max_answer_length=200)
    assert preds_long["a"] == CONTEXT[offs[ctx[0]][0]:offs[ctx[-1]][1]]


def test_logit_rows_must_match_windows(minilm_tokenizer):
    _, _, features, examples = _eval_setup(minilm_tokenizer)
    with pytest.raises(ValueError, match="windows"):
        postprocess_qa_predictions(examples, features, np.zeros((1, 4)), np.zeros((1, 4)))
