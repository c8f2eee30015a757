"""SQuAD v1.1 EM/F1 against hand-checked cases."""

import pytest

from hf_lnorm.recipes.squad_metrics import exact_match_score, f1_score, normalize_answer, squad_scores


@pytest.mark.parametrize("raw, norm", [
    ("The Ghost", "ghost"),
    ("  an   apple, a pear!  ", "apple pear"),
    ("Theater", "theater"),                 # 'the' only as a whole word
    ("O'er the hill-top", "oer hilltop"),   # punctuation removed without a space
    ("A", ""),
    ("Ham.", "ham"),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match_ignores_case_articles_punctuation():
    assert exact_match_score("The Ghost.", "ghost") == 1.0
    assert exact_match_score("Ghost of Hamlet", "ghost") == 0.0


@pytest.mark.parametrize("pred, truth, f1", [
    ("the cat sat", "cat sat on mat", 2 * 1.0 * 0.5 / 1.5),      # P=2/2, R=2/4 -> 0.6667
    ("cat cat", "cat", 2 * 0.5 * 1.0 / 1.5),                      # bag counts: 1 shared of 2 predicted
    ("on the mat", "sat on mat", 2 * 1.0 * (2 / 3) / (1 + 2 / 3)),  # 'the' dropped: P=2/2, R=2/3 -> 0.8
    ("dog", "cat", 0.0),
    ("the", "cat", 0.0),                                         # empty after normalisation
    ("Hor", "Hor.", 1.0),
])
def test_f1_hand_checked(pred, truth, f1):
    assert f1_score(pred, truth) == pytest.approx(f1)


def test_scores_take_best_ground_truth_and_average():
    preds = {"q1": "cat sat", "q2": "Polonius", "q3": "a dog"}
    refs = {"q1": ["the cat sat on the mat", "cat sat"], "q2": ["Hamlet"], "q3": ["dog", "the dog barked"], "q4": ["x"]}
    out = squad_scores(preds, refs)
    # q1 EM 1 F1 1; q2 0/0; q3 EM 1 F1 1; q4 missing -> 0/0
    assert out["exact_match"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(50.0)
    assert out["count"] == 4


def test_partial_credit_average():
    out = squad_scores({"a": "the cat sat", "b": "cat"}, {"a": ["cat sat on mat"], "b": ["cat"]})
    assert out["exact_match"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(100 * (2 / 3 + 1.0) / 2)


def test_empty_references_rejected():
    with pytest.raises(ValueError, match="no reference"):
        squad_scores({}, {})
    with pytest.raises(ValueError, match="'q1' has no reference answer"):
        squad_scores({"q1": "x"}, {"q1": []})
