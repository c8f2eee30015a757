"""Deployed folders of ``hf-lnorm optimize``: load hints, their imports, the README, verify, and (transformers 4.57
with optimum-onnx and optimum-intel) Optimum's ORTModel / OVModel and ``pipeline`` on ONNX Runtime and OpenVINO
folders."""

import json

import numpy as np
import pytest
import torch
import transformers

from hf_lnorm.cli import main
from hf_lnorm.export.deploy import import_lines, load, runner_for, verify
from hf_lnorm.export.tasks import get_task

from ..conftest import minilm_path


def test_import_lines_name_each_module_and_class_of_a_hint():
    assert import_lines('onnxruntime.InferenceSession(PATH + "/model.onnx")') == ["import onnxruntime"]
    assert import_lines("hf_lnorm.patch(AutoModelForQuestionAnswering.from_pretrained(PATH).eval())") == [
        "import hf_lnorm", "from transformers import AutoModelForQuestionAnswering"]
    with pytest.raises(NameError, match="'NoSuchLoader'"):
        import_lines("NoSuchLoader(PATH)")
    with pytest.raises(NameError, match="'NoSuchLoader'"):
        load("/tmp", "NoSuchLoader(PATH)")


def _quick_job(tmp_path_factory, route: str):
    """``hf-lnorm optimize --quick`` of a tiny BERT QA model with one route; returns the job's output folder."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    cfg = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64, max_position_embeddings=128)
    root = tmp_path_factory.mktemp(f"deploy-{route}")
    torch.manual_seed(0)
    transformers.BertForQuestionAnswering(cfg).save_pretrained(root / "tiny")
    tokenizer.save_pretrained(root / "tiny")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["optimize", str(root / "tiny"), "--quick", "--routes", route, "--output", str(root / "opt"),
                     "--repeats", "1", "--threads", "1", "--no-plot"]) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "opt"


@pytest.fixture(scope="module")
def ort_folder(tmp_path_factory):
    """A quick job with the ONNX Runtime fp32 route only."""
    return _quick_job(tmp_path_factory, "ort-fp32")


def test_ort_folder_readme_and_verify(ort_folder):
    report = json.loads((ort_folder / "report.json").read_text())
    assert report["chosen"] == "ort-fp32" and report["verify_deploy"]["equal"] == report["verify_deploy"]["total"] == 8
    folder = ort_folder / "model"
    assert sorted(p.name for p in folder.iterdir()) >= ["README.md", "answers.json", "config.json", "model.onnx"]
    readme = (folder / "README.md").read_text()
    assert 'model = onnxruntime.InferenceSession(PATH + "/model.onnx")' in readme and "import onnxruntime" in readme
    assert "ORTModelForQuestionAnswering.from_pretrained(PATH)" in readme and "sample_train.json" in readme
    answers = json.loads((folder / "answers.json").read_text())
    task = get_task("question-answering")
    from hf_lnorm.resources import QA_EVAL_FILE, data_file

    hint = report["routes"][0]["load_hint"]
    same = verify(folder, hint, task, data_file(*QA_EVAL_FILE), 8, 64, answers, threads=1)
    assert same == {"equal": 8, "total": 8, "differing": [], "error": None}
    # verify notices answers that are not the folder's
    changed = dict(answers)
    first = next(iter(changed))
    changed[first] = changed[first] + " (not this answer)"
    differs = verify(folder, hint, task, data_file(*QA_EVAL_FILE), 8, 64, changed, threads=1)
    assert differs["equal"] == 7 and differs["differing"] == [first]


def test_optimum_ortmodel_and_pipeline_load_the_ort_folder(ort_folder):
    optimum_ort = pytest.importorskip("optimum.onnxruntime", reason="Optimum's ORTModel needs optimum-onnx (transformers 4.57 line)")
    folder = str(ort_folder / "model")
    model = optimum_ort.ORTModelForQuestionAnswering.from_pretrained(folder)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    enc = tokenizer("Who speaks?", "Hamlet speaks to the ghost.", return_tensors="np")
    feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
    plain = runner_for(load(folder, 'onnxruntime.InferenceSession(PATH + "/model.onnx")'), ("start_logits", "end_logits"))(feed)
    via_optimum = runner_for(model, ("start_logits", "end_logits"))(feed)
    for a, b in zip(via_optimum, plain):
        np.testing.assert_allclose(a, b, atol=1e-5)
    qa = transformers.pipeline("question-answering", model=model, tokenizer=tokenizer)
    answer = qa(question="Who speaks?", context="Hamlet speaks to the ghost.")
    assert set(answer) >= {"answer", "score", "start", "end"} and answer["answer"] in "Hamlet speaks to the ghost."


TRANSFORMERS_4 = int(transformers.__version__.split(".")[0]) < 5


@pytest.fixture(scope="module")
def openvino_folder(tmp_path_factory):
    """A quick job with the OpenVINO f32 route only."""
    pytest.importorskip("openvino", reason="the OpenVINO routes need the openvino extra")
    return _quick_job(tmp_path_factory, "openvino-f32")


def test_optimum_intel_ovmodel_and_pipeline_load_the_openvino_folder(openvino_folder):
    """Optimum Intel 1.x (transformers < 4.58; the 4.57 test environment installs it) loads the OpenVINO folder
    with the README's class, gives the runtime's logits, and serves ``pipeline("question-answering")``."""
    if TRANSFORMERS_4:
        import optimum.intel as optimum_intel  # installed with the 4.57 line: a missing one is an error here
    else:
        optimum_intel = pytest.importorskip("optimum.intel", reason="optimum-intel 1.x needs transformers < 4.58; its "
                                            "2.x releases pull torchvision, which this CPU-only environment avoids")
    report = json.loads((openvino_folder / "report.json").read_text())
    assert report["chosen"] == "openvino-f32" and report["verify_deploy"]["equal"] == report["verify_deploy"]["total"]
    folder = str(openvino_folder / "model")
    # the README's Optimum line keeps the route's f32 inference (Optimum Intel's own default here would be bf16)
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    readme = (openvino_folder / "model" / "README.md").read_text()
    assert f"optimum.intel.OVModelForQuestionAnswering.from_pretrained(PATH, ov_config={json.dumps(f32)})" in readme
    assert 'transformers.pipeline("question-answering", model=model, tokenizer=tokenizer)' in readme
    model = optimum_intel.OVModelForQuestionAnswering.from_pretrained(folder, ov_config=f32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    enc = tokenizer("Who speaks?", "Hamlet speaks to the ghost.", return_tensors="np")
    feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
    hint = report["routes"][0]["load_hint"]
    plain = runner_for(load(folder, hint), ("start_logits", "end_logits"))(feed)
    via_optimum = runner_for(model, ("start_logits", "end_logits"))(feed)
    for a, b in zip(via_optimum, plain):
        np.testing.assert_allclose(a, b, atol=1e-4)
    # the README's one-shape line: a static-shape compile that gives the same f32 logits at that shape
    static_line = (f"optimum.intel.OVModelForQuestionAnswering.from_pretrained(PATH, ov_config={json.dumps(f32)}, "
                   "compile=False).reshape(BATCH, SEQ)")
    assert static_line in readme
    seq = feed["input_ids"].shape[1]
    static = optimum_intel.OVModelForQuestionAnswering.from_pretrained(folder, ov_config=f32, compile=False).reshape(1, seq)
    assert all(p.get_partial_shape().is_static for p in static.model.inputs)
    for a, b in zip(runner_for(static, ("start_logits", "end_logits"))(feed), plain):
        np.testing.assert_allclose(a, b, atol=1e-4)
    if TRANSFORMERS_4:
        qa = transformers.pipeline("question-answering", model=model, tokenizer=tokenizer)
        answer = qa(question="Who speaks?", context="Hamlet speaks to the ghost.")
        assert set(answer) >= {"answer", "score", "start", "end"} and answer["answer"] in "Hamlet speaks to the ghost."


def test_trimmed_openvino_folder_loads_with_optimum_intel_and_skips_the_padding(tmp_path_factory):
    """The openvino-trimmed route's folder: the README says what trimming does (and gives no one-shape line), Optimum
    Intel loads it with the same inputs and outputs, and a padded batch gives the untrimmed model's logits at real
    tokens and the fill past the batch's last real token."""
    pytest.importorskip("openvino", reason="the OpenVINO routes need the openvino extra")
    out = _quick_job(tmp_path_factory, "openvino-trimmed")
    report = json.loads((out / "report.json").read_text())
    assert report["chosen"] == "openvino-trimmed" and report["verify_deploy"]["equal"] == report["verify_deploy"]["total"]
    readme = (out / "model" / "README.md").read_text()
    assert "runs only up to the last real token of each batch" in readme and ".reshape(BATCH, SEQ)" not in readme
    folder = str(out / "model")
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    enc = tokenizer(["Who speaks?", "Who?"], ["Hamlet speaks to the ghost.", "Hamlet."], padding="max_length",
                    max_length=32, return_tensors="np")
    feed = {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}
    last = int(np.flatnonzero(feed["attention_mask"].any(axis=0))[-1]) + 1
    import openvino

    from hf_lnorm.export.openvino import OV_XML, PAD_FILL, OpenVINORunner

    # f32, so that the comparison with PyTorch is exact on CPUs whose plugin default is bf16 as well
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    ir = openvino.Core().read_model(str(out / "model" / OV_XML))
    trimmed = OpenVINORunner(ir, ("start_logits", "end_logits"), threads=1, precision="f32", static=False)(feed)

    model = transformers.AutoModelForQuestionAnswering.from_pretrained(str(out.parent / "tiny")).eval()
    with torch.inference_mode():
        ref = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    mask = feed["attention_mask"].astype(bool)
    for got, want in zip(trimmed, (ref.start_logits.numpy(), ref.end_logits.numpy())):
        assert got.shape == want.shape and np.abs(got - want)[mask].max() < 1e-4
        assert np.all(got[:, last:] == PAD_FILL) and last < 32
    if TRANSFORMERS_4:
        import optimum.intel as optimum_intel

        ov = optimum_intel.OVModelForQuestionAnswering.from_pretrained(folder, ov_config=f32)
        for a, b in zip(runner_for(ov, ("start_logits", "end_logits"))(feed), trimmed):
            np.testing.assert_allclose(a, b, atol=1e-4)
        qa = transformers.pipeline("question-answering", model=ov, tokenizer=tokenizer)
        assert qa(question="Who speaks?", context="Hamlet speaks to the ghost.")["answer"] in "Hamlet speaks to the ghost."
