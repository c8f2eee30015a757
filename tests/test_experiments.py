"""``hf-lnorm experiment``: the harness, the ``grad_norms_init`` experiment and its generated docs page."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from hf_lnorm.cli import main
from hf_lnorm.experiments import grad_norms_init, names
from hf_lnorm.outputs import MARKER

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "data" / "results" / "experiments" / "grad_norms_init.json"
PAGE = ROOT / "docs" / "experiments" / "grad_norms_init.md"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run through the CLI: (exit status, output folder, log records)."""
    out = tmp_path_factory.mktemp("exp") / "grad"
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.WARNING)
    logging.getLogger("hf_lnorm").addHandler(handler)
    try:
        code = main(["experiment", "grad_norms_init", "--quick", "--output", str(out)])
    finally:
        logging.getLogger("hf_lnorm").removeHandler(handler)
    return code, out, records


def test_quick_run_writes_per_seed_data_provenance_and_plot(quick_run):
    code, out, records = quick_run
    assert code == 0
    data = json.loads((out / "grad_norms_init.json").read_text(encoding="utf-8"))
    assert (out / MARKER).is_file()
    assert data["experiment"] == "grad_norms_init" and data["quick"] is True and data["seeds"] == 1
    assert {"git_sha", "versions", "machine", "command", "created"} <= set(data["provenance"])
    runs = {(r["setting"], r["depth"], r["norm_position"]) for r in data["per_seed"]}
    assert runs == {(s, 6, p) for s in ("A", "B") for p in ("pre", "post")}
    for record in data["per_seed"]:
        for q in ("w1", "w2", "layer"):
            assert len(record[q]) == 6 and all(v > 0 for v in record[q]), (record["setting"], q)
        assert all(lay >= w for lay, w in zip(record["layer"], record["w2"]))
    assert len(data["summary"]["verdicts"]) == 2 * 3
    png = out / "grad_norms_init.png"
    if HAS_MATPLOTLIB:
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not [r for r in records if "plot was skipped" in r.getMessage()]
    else:
        assert not png.exists()
        skipped = [r for r in records if "plot was skipped" in r.getMessage()]
        assert len(skipped) == 1 and skipped[0].levelno == logging.WARNING


def test_existing_output_needs_overwrite(quick_run, capsys):
    _, out, _ = quick_run
    before = (out / "grad_norms_init.json").read_bytes()
    assert main(["experiment", "grad_norms_init", "--quick", "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "grad_norms_init.json").read_bytes() == before


def test_unknown_experiment_exits_2_naming_the_accepted_ones(capsys):
    assert main(["experiment", "grad_norm_init"]) == 2
    err = capsys.readouterr().err
    assert "'grad_norm_init'" in err and "grad_norms_init" in err.replace("'grad_norm_init'", "")


def test_missing_name_exits_2_and_list_names_every_experiment(capsys):
    assert main(["experiment"]) == 2
    assert "--list" in capsys.readouterr().err
    assert main(["experiment", "--list"]) == 0
    listed = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == names()


def test_unmarked_output_folder_is_refused_and_left_alone(tmp_path, capsys):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me", encoding="utf-8")
    assert main(["experiment", "grad_norms_init", "--quick", "--overwrite", "--output", str(theirs)]) == 2
    assert "not written by hf-lnorm" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs"]  # no staging folder left either
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"]
    assert (theirs / "notes.txt").read_text(encoding="utf-8") == "keep me"


def _record(setting, position, w2):
    return {"setting": setting, "depth": len(w2), "norm_position": position, "seed": 0, "w1": w2, "w2": w2, "layer": w2}


def test_verdict_needs_post_ln_growth_and_pre_ln_flatness():
    flat, growing, shrinking = [1.0, 1.1, 1.0], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]
    summary = grad_norms_init.summarize([_record("A", "pre", flat), _record("A", "post", growing),
                                         _record("B", "pre", shrinking), _record("B", "post", growing)])
    verdict = {(v["setting"], v["quantity"]): v for v in summary["verdicts"]}
    assert verdict[("A", "w2")]["held"] is True
    assert verdict[("B", "w2")]["post_grows"] is True and verdict[("B", "w2")]["pre_flat"] is False
    assert verdict[("B", "w2")]["held"] is False
    lines = grad_norms_init.summary_lines({"summary": summary})
    assert lines[0].startswith("Setting A: **Claim reproduced: Post-LN half reproduced, Pre-LN half reproduced.**")
    assert lines[1].startswith("Setting B: **Claim not reproduced: Post-LN half reproduced, Pre-LN half not reproduced.**")
    assert "Pre-LN's shrink toward the output" in lines[1]
    ratio = {(v["setting"], v["quantity"]): v["post_ratio"] for v in summary["verdicts"]}
    assert ratio[("A", "w1")] == pytest.approx(3.0)


def test_docs_page_is_what_the_committed_json_renders_to(capsys):
    assert main(["experiment", "grad_norms_init", "--render-docs", str(RESULT)]) == 0
    rendered = capsys.readouterr().out
    assert PAGE.read_text(encoding="utf-8") == rendered, (
        "docs/experiments/grad_norms_init.md differs from its JSON; run: hf-lnorm experiment grad_norms_init "
        "--render-docs data/results/experiments/grad_norms_init.json > docs/experiments/grad_norms_init.md")
    data = json.loads(RESULT.read_text(encoding="utf-8"))
    assert data["quick"] is False and data["seeds"] == 3 and "provenance" in data
    for line in grad_norms_init.summary_lines(data):
        assert line in rendered


def test_docs_plot_is_the_committed_one_and_every_experiment_is_listed():
    assert (ROOT / "docs" / "experiments" / "img" / "grad_norms_init.png").read_bytes() == \
        RESULT.with_suffix(".png").read_bytes()
    index = (ROOT / "docs" / "experiments" / "index.md").read_text(encoding="utf-8")
    for name in names():
        assert f"({name}.md)" in index, name


def test_render_docs_refuses_another_experiments_json(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"experiment": "something_else"}), encoding="utf-8")
    assert main(["experiment", "grad_norms_init", "--render-docs", str(other)]) == 2
    assert "'something_else'" in capsys.readouterr().err
