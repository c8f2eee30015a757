"""The bundled fine-tuned QA model: the committed LoRA adapter merged into the offline MiniLM."""

import json
import os

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from hf_lnorm.loading import QA_ADAPTER_DIR, ModelNotFoundError, bundled_model_path, bundled_qa_model_path, default_qa_model


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    cache = tmp_path_factory.mktemp("merged")
    return cache, bundled_qa_model_path(cache_dir=cache)


def test_merged_model_computes_what_the_adapter_does(merged):
    from peft import PeftModel

    _, path = merged
    tokenizer = AutoTokenizer.from_pretrained(path)
    inputs = tokenizer(["Who says \"to be, or not to be\"?"], ["HAMLET. To be, or not to be, that is the question."],
                       return_tensors="pt")
    assert inputs["token_type_ids"].any()  # the context is segment 1: it must reach the model
    base = AutoModelForQuestionAnswering.from_pretrained(bundled_model_path()).eval()
    with torch.no_grad():
        stock = base(**inputs).start_logits
        adapted = PeftModel.from_pretrained(base, str(QA_ADAPTER_DIR)).eval()(**inputs).start_logits
        got = AutoModelForQuestionAnswering.from_pretrained(path).eval()(**inputs).start_logits
    torch.testing.assert_close(got, adapted, atol=1e-4, rtol=1e-4)
    assert (got - stock).abs().max() > 1.0  # the adapter and its span head are really in the merged weights


def test_merge_runs_once_and_leaves_no_partial_folder(merged, monkeypatch):
    cache, path = merged
    stamp = os.path.join(path, "hf_lnorm_merge.json")
    before = os.stat(stamp).st_mtime_ns
    assert bundled_qa_model_path(cache_dir=cache) == path
    assert os.stat(stamp).st_mtime_ns == before
    assert json.loads(open(stamp).read())["adapter_sha256"]
    assert sorted(p.name for p in cache.iterdir()) == [os.path.basename(path)]

    import peft

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(peft.PeftModel, "from_pretrained", broken)
    other = cache / "other"
    with pytest.raises(RuntimeError, match="disk full"):
        bundled_qa_model_path(cache_dir=other)
    assert list(other.iterdir()) == []  # the temporary folder is gone


def test_missing_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no LoRA adapter in .*empty.*adapter_config.json"):
        bundled_qa_model_path(adapter_dir=tmp_path / "empty", cache_dir=tmp_path)


def test_default_qa_model_is_fine_tuned():
    path, description = default_qa_model()
    assert "runs/qa-minilm" in description or "adapter" in description
    model = AutoModelForQuestionAnswering.from_pretrained(path)
    assert model.config.model_type == "bert"


def test_resolve_model_folders_files_paths_and_hub_ids(tmp_path):
    from hf_lnorm import export
    from hf_lnorm.loading import resolve_model

    assert export.ModelNotFoundError is ModelNotFoundError  # one error class for the CLI's exit 2
    assert resolve_model(None) == bundled_model_path()
    folder = tmp_path / "m"
    folder.mkdir()
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        resolve_model(str(folder))
    (folder / "config.json").write_text("{}")
    assert resolve_model(str(folder)) == str(folder)
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model(str(weights))
    with pytest.raises(ModelNotFoundError, match="model path './nope/model' does not exist"):
        resolve_model("./nope/model")
    assert resolve_model("org/not-checked") == "org/not-checked"  # hub ids are only looked up with check_hub
    with pytest.raises(ModelNotFoundError, match="'org/surely-not-a-model' is neither a local directory nor a resolvable"):
        resolve_model("org/surely-not-a-model", check_hub=True)
