"""Bad input gets one clear error naming the file and the problem; the committed QA data is valid."""

import json
import os
import sys

import pytest

from hf_lnorm.recipes.data_files import DataFileError, load_squad_file, load_translation_file
from hf_lnorm.resources import data_file

from .conftest import BIBLE_SAMPLE, QA_SAMPLE_DEV, QA_SAMPLE_TRAIN, ROOT

GOOD = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
    {"context": "Hor: Do, if it will not stand.", "qas": [{"id": "q1", "question": "Who?", "answers": [{"text": "Hor", "answer_start": 0}]}]}]}]}


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return str(p)


def test_good_file_in_both_layouts(tmp_path):
    rows = load_squad_file(_write(tmp_path, "good.json", GOOD))
    assert rows == [{"id": "q1", "title": "t", "context": GOOD["data"][0]["paragraphs"][0]["context"], "question": "Who?",
                     "answers": {"text": ["Hor"], "answer_start": [0]}}]
    jsonl = "\n".join(json.dumps(r) for r in rows) + "\n"
    assert load_squad_file(_write(tmp_path, "good.jsonl", jsonl)) == rows


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(DataFileError) as err:
        load_squad_file(path)
    assert str(err.value) == f"{path}: SQuAD file not found"


@pytest.mark.parametrize("content, problem", [
    ({"articles": []}, "not SQuAD format: expected an object with a 'data' list"),
    ([{"text": "hello"}], "not SQuAD format: row 0 needs 'id', 'context', 'question' and 'answers'"),
    ({"data": [{"title": "x"}]}, "not SQuAD format: article 0 has no 'paragraphs' list"),
    ("{not json", "not valid JSON or JSON lines"),
])
def test_not_squad_format(tmp_path, content, problem):
    path = _write(tmp_path, "bad.json", content)
    with pytest.raises(DataFileError) as err:
        load_squad_file(path)
    assert str(err.value).startswith(f"{path}: {problem}")


def test_context_without_answer_span(tmp_path):
    bad = json.loads(json.dumps(GOOD))
    bad["data"][0]["paragraphs"][0]["qas"][0]["answers"] = []
    path = _write(tmp_path, "noanswer.json", bad)
    with pytest.raises(DataFileError, match=r"noanswer\.json: question 'q1': no answer span"):
        load_squad_file(path)


def test_answer_that_is_not_the_span(tmp_path):
    bad = json.loads(json.dumps(GOOD))
    bad["data"][0]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "stand", "answer_start": 3}]
    path = _write(tmp_path, "offset.json", bad)
    with pytest.raises(DataFileError) as err:
        load_squad_file(path)
    msg = str(err.value)
    assert msg.startswith(path) and "'stand' is not the span context[3:8]" in msg and "occurs at offset 24" in msg
    bad["data"][0]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "Ghost", "answer_start": 0}]
    with pytest.raises(DataFileError, match="does not occur in the context"):
        load_squad_file(_write(tmp_path, "absent.json", bad))


def test_translation_file_errors(tmp_path):
    with pytest.raises(DataFileError, match="translation file not found"):
        load_translation_file(str(tmp_path / "x.jsonl"), "en", "es")
    path = _write(tmp_path, "pairs.jsonl", '{"en": "a", "es": "b"}\n{"en": "c", "fr": "d"}\n')
    with pytest.raises(DataFileError, match=r"pairs\.jsonl: row 2 has no 'en'/'es' pair"):
        load_translation_file(path, "en", "es")
    rows = load_translation_file(BIBLE_SAMPLE, "en", "es", extra_keys=["book"])
    assert len(rows) > 1000 and set(rows[0]) == {"translation", "book"}


def test_script_reports_the_bad_file(run_qa, tmp_path):
    """The script fails before loading any model, with the loader's one-line error."""
    bad = _write(tmp_path, "bad.json", {"articles": []})
    argv = ["--train_file", bad, "--validation_file", QA_SAMPLE_DEV, "--do_train", "--do_eval", "--output_dir", str(tmp_path / "out")]
    with pytest.raises(DataFileError, match=r"bad\.json: not SQuAD format"):
        run_qa.main(argv)
    missing = str(tmp_path / "missing.json")
    with pytest.raises(DataFileError, match=r"missing\.json: SQuAD file not found"):
        run_qa.main(["--train_file", QA_SAMPLE_TRAIN, "--validation_file", missing, "--do_train", "--do_eval", "--output_dir", str(tmp_path / "o2")])
    assert not os.path.exists(tmp_path / "out")


def test_committed_qa_data_is_valid_and_split_by_play():
    """Every committed answer is an exact span (the loader checks it) and dev plays never appear in train."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import make_qa_data
    finally:
        sys.path.pop(0)
    full_train = os.path.join(ROOT, "data", "qa", "train.json")  # the full split stays in the repository, unshipped
    for train, dev in ((full_train, data_file("qa", "dev.json")),
                       (data_file("qa", "sample_train.json"), data_file("qa", "sample_dev.json"))):
        tr = load_squad_file(str(train))
        dv = load_squad_file(str(dev))
        assert {r["title"] for r in dv} <= set(make_qa_data.DEFAULT_DEV_PLAYS)
        assert not {r["title"] for r in tr} & set(make_qa_data.DEFAULT_DEV_PLAYS)
        assert {r["id"].rsplit("-", 1)[1] for r in tr} == {"who", "reply"}
    assert len(load_squad_file(full_train)) > 3000
