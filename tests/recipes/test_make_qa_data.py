"""The QA data builder: deterministic, exact spans, held-out plays."""

import json
import os
import sys

from hf_lnorm.recipes.data_files import load_squad_file

from .conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_qa_data  # noqa: E402

sys.path.pop(0)

PLAY = """HAMLET, PRINCE OF DENMARK

by William Shakespeare



ACT I.

Scene I. Elsinore. A platform before the Castle.

[Francisco at his post. Enter to him Bernardo.]

Ber.
Who's there?

Fran.
Nay, answer me: stand, and unfold yourself.

Ber.
Long live the king!

Fran.
Bernardo?

Ber.
He.

Fran.
You come most carefully upon your hour.

Ber.
'Tis now struck twelve. Get thee to bed, Francisco.

Fran.
For this relief much thanks: 'tis bitter cold,
And I am sick at heart.

Ber.
Have you had quiet guard?

Fran.
Not a mouse stirring.
"""


def test_parse_speeches_and_questions():
    plays = make_qa_data.split_plays(PLAY + "\n\n" + PLAY.replace("HAMLET, PRINCE OF DENMARK", "OTHER PLAY"))
    assert [t for t, _ in plays] == ["HAMLET, PRINCE OF DENMARK", "OTHER PLAY"]
    scenes = make_qa_data.parse_scenes(plays[0][1])
    assert len(scenes) == 1
    speeches = scenes[0]
    assert [s.tag for s in speeches][:3] == ["Ber", "Fran", "Ber"]
    assert "He." not in [s.text for s in speeches]  # one-word speeches are left out (documented limit)
    assert "For this relief much thanks: 'tis bitter cold, And I am sick at heart." in [s.text for s in speeches]
    import random

    para = make_qa_data.make_questions(random.Random(0), speeches[:6], "x")
    ctx = para["context"]
    assert ctx.startswith("Ber: Who's there?\nFran: Nay, answer me")
    for qa in para["qas"]:
        a = qa["answers"][0]
        assert ctx[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]
    kinds = {qa["id"].split("-")[-1] for qa in para["qas"]}
    assert kinds == {"who", "reply"}


def test_builder_writes_valid_deterministic_files(tmp_path):
    src = tmp_path / "plays.txt"
    body = PLAY * 1
    src.write_text(body + "\n\n" + body.replace("HAMLET, PRINCE OF DENMARK", "OTHER PLAY"), encoding="utf-8")
    out = []
    for k in range(2):
        d = tmp_path / f"o{k}"
        assert make_qa_data.main(["--input", str(src), "--output_dir", str(d), "--dev_plays", "OTHER PLAY",
                                  "--min_words", "10", "--max_words", "40"]) == 0
        out.append((d / "train.json").read_text() + (d / "dev.json").read_text())
        tr = load_squad_file(str(d / "train.json"))
        dv = load_squad_file(str(d / "dev.json"))
        assert {r["title"] for r in tr} == {"HAMLET, PRINCE OF DENMARK"} and {r["title"] for r in dv} == {"OTHER PLAY"}
    assert out[0] == out[1]
    assert json.loads((tmp_path / "o0" / "train.json").read_text())["version"] == "1.1"
