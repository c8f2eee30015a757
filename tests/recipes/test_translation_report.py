"""``scripts/translation_report.py`` turns a finished translation-recipe run into the docs' result JSON."""

import json
import os

import pytest

from .conftest import BIBLE_SAMPLE, load_script, translation_args, write_config


@pytest.fixture(scope="module")
def report():
    return load_script("translation_report")


@pytest.fixture(scope="module")
def finished_run(run_translation, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("translation_run")
    out = str(tmp / "run")
    cfg = translation_args(out, max_steps=6, logging_steps=2, eval_strategy="steps", eval_steps=3, max_eval_samples=40)
    config_path = write_config(str(tmp / "config.json"), cfg)
    run_translation.main([config_path])
    return out, config_path


def test_report_holds_the_curve_scores_samples_and_provenance(report, finished_run, tmp_path):
    out, config_path = finished_run
    result_path = tmp_path / "result.json"
    assert report.main([out, "--config", config_path, "--json", str(result_path)]) == 0
    result = json.loads(result_path.read_text(encoding="utf-8"))
    with open(os.path.join(out, "all_results.json"), encoding="utf-8") as f:
        final = json.load(f)
    assert result["final"]["eval_bleu"] == final["eval_bleu"]
    assert result["final"]["eval_copy_source_chrf"] == final["eval_copy_source_chrf"]
    assert [p["step"] for p in result["curve"]["train"]] == [2, 4, 6]
    # evaluations at steps 3 and 6 during training, then the final one the recipe runs after training
    assert [p["step"] for p in result["curve"]["eval"]][:2] == [3, 6]
    assert all(p["bleu"] is not None and p["chrf"] is not None for p in result["curve"]["eval"])
    assert result["provenance"]["command"] and "versions" in result["provenance"]
    assert result["settings"]["max_steps"] == 6
    # one sample per held-out book of the evaluated rows, named by verse id from the corpus
    books = {s["id"].split(".")[0] for s in result["samples"]}
    with open(BIBLE_SAMPLE, encoding="utf-8") as f:
        corpus = [json.loads(line) for line in f]
    held = [r for r in corpus if r["book"] in translation_args("x")["holdout_books"].split(",")][:40]
    assert books == {r["book"] for r in held}
    assert len(result["samples"]) == len(books)
    names = result["names"]
    assert 0 <= names["kept"] <= names["shared"]


def test_names_counts_shared_capitalised_words(report):
    rows = [{"source": "And Elimelech went to the land of Moab.", "reference": "Y Elimelech fue a la tierra de Moab.",
             "prediction": "Y fue a la tierra de Moab."},
            {"source": "Go to Nineveh.", "reference": "Ve a Nínive.", "prediction": "Ve."}]
    assert report.shared_names(rows) == {"shared": 2, "kept": 1, "share_kept": 0.5, "most_kept": ["Moab"]}


def test_unfinished_run_is_refused(report, tmp_path):
    config = write_config(str(tmp_path / "c.json"), {"train_file": "x.jsonl"})
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit, match="lacks trainer_state.json"):
        report.main([str(tmp_path / "run"), "--config", config, "--json", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()


def test_evaluation_only_runs_replace_the_scores_of_their_steps(report, finished_run, run_translation, tmp_path):
    out, config_path = finished_run
    cfg = translation_args(str(tmp_path / "eval6"), do_train=False, model_name_or_path=out, max_eval_samples=40,
                           generation_num_beams=2)
    res = run_translation.main([write_config(str(tmp_path / "eval.json"), cfg)])
    assert (tmp_path / "eval6" / "provenance.json").is_file()  # evaluation-only runs record theirs too
    result_path = tmp_path / "result.json"
    assert report.main([out, "--config", config_path, "--json", str(result_path),
                        "--evaluation", f"6={tmp_path / 'eval6'}"]) == 0
    result = json.loads(result_path.read_text(encoding="utf-8"))
    points = {p["step"]: p for p in result["curve"]["eval"]}
    assert points[6]["from"] == "evaluation-only run" and points[6]["bleu"] == res["eval_bleu"]
    assert points[3]["from"] == "during training"
    assert result["final"]["eval_bleu"] == res["eval_bleu"] and result["final"]["eval_chrf"] == res["eval_chrf"]
    assert result["final"]["train_wall_s"] is not None  # still the training run's
    assert result["evaluation_provenance"]["command"]
    with pytest.raises(SystemExit):
        report.main([out, "--config", config_path, "--json", str(tmp_path / "r.json"), "--evaluation", "nine=x"])
    with pytest.raises(SystemExit, match="beyond the run's last step 6"):
        report.main([out, "--config", config_path, "--json", str(tmp_path / "r.json"),
                     "--evaluation", f"60={tmp_path / 'eval6'}"])
