"""The patch/unpatch contract: bad input, include/exclude, per instance, PEFT, Trainer, compile, ONNX."""

import copy
import warnings

import pytest
import torch
from torch import nn
from transformers import AutoModel, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

import hf_lnorm
from hf_lnorm.inputs import dummy_inputs
from hf_lnorm.patching import STATE_ATTR

from ..backend_check import assert_aten_only, assert_inference_backend, norm_calls
from ..conftest import minilm_path
from .archs import tiny_config


def _bert(seed=0, head=None):
    torch.manual_seed(seed)
    cls = head or AutoModel
    return cls.from_config(tiny_config("bert"), attn_implementation="eager").eval()


def _norm_names(model):
    return [n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)]


# --------------------------------------------------------------------------- bad input


def test_non_module_is_a_type_error():
    with pytest.raises(TypeError, match="expects a torch.nn.Module, got builtins.dict"):
        hf_lnorm.patch({"weight": torch.ones(3)})
    with pytest.raises(TypeError, match="got builtins.str"):
        hf_lnorm.unpatch("model")


def test_unknown_mode_lists_the_modes():
    with pytest.raises(ValueError, match=r"unknown mode 'int4'; accepted modes: .*fused"):
        hf_lnorm.patch(_bert(), mode="int4")


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'cuda-magic'.*aten"):
        hf_lnorm.patch(_bert(), backend="cuda-magic")


def test_model_without_norms_warns_and_reports_nothing():
    mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.warns(UserWarning, match="no norm layers found in Sequential"):
        assert hf_lnorm.patch(mlp) is mlp
    assert list(hf_lnorm.patch_report(mlp)) == []


def test_patterns_matching_nothing_warn():
    model = _bert()
    with pytest.warns(UserWarning, match="include pattern 'decoder.*' matched no norm layer"):
        hf_lnorm.patch(model, include="decoder.*")
    assert not hf_lnorm.patch_report(model).patched
    with pytest.warns(UserWarning, match="exclude pattern 'nope' matched no norm layer"):
        hf_lnorm.patch(model, exclude=["nope"])
    with pytest.raises(TypeError, match="include must be a module-name pattern"):
        hf_lnorm.patch(model, include=3)


def test_unpatch_of_unpatched_model_is_a_noop():
    model = _bert()
    before = {n: (type(m), dict(m.__dict__)) for n, m in model.named_modules()}
    assert hf_lnorm.unpatch(model) is model
    after = {n: (type(m), dict(m.__dict__)) for n, m in model.named_modules()}
    assert before.keys() == after.keys()
    assert all(before[n][0] is after[n][0] and before[n][1].keys() == after[n][1].keys() for n in before)


# --------------------------------------------------------------------------- selection and scope


def test_include_and_exclude_select_by_name():
    model = _bert()
    hf_lnorm.patch(model, include="encoder.layer.0.*", exclude="*attention.output.LayerNorm")
    report = hf_lnorm.patch_report(model)
    assert [r.name for r in report.patched] == ["encoder.layer.0.output.LayerNorm"]
    assert {r.status for r in report if r.name != "encoder.layer.0.output.LayerNorm"} == {"excluded"}
    # a trailing-name pattern
    hf_lnorm.unpatch(model)
    hf_lnorm.patch(model, include="LayerNorm")
    assert len(hf_lnorm.patch_report(model).patched) == len(_norm_names(model))


def test_per_instance_two_models_patched_differently():
    a, b, c = _bert(), _bert(), _bert()
    hf_lnorm.patch(a)
    hf_lnorm.patch(b, include="embeddings.LayerNorm")
    assert len(hf_lnorm.patch_report(a).patched) == 5
    assert len(hf_lnorm.patch_report(b).patched) == 1
    assert not any(STATE_ATTR in m.__dict__ for m in c.modules())
    assert nn.LayerNorm.forward is c.embeddings.LayerNorm.forward.__func__  # class untouched
    inputs = dummy_inputs(a)
    with torch.no_grad():
        ya, yb, yc = (m(**inputs).last_hidden_state for m in (a, b, c))
    assert torch.allclose(ya, yc, atol=1e-6) and torch.allclose(yb, yc, atol=1e-6)


def test_deepcopy_of_a_patched_model_is_patched_on_its_own():
    model = hf_lnorm.patch(_bert())
    clone = copy.deepcopy(model)
    ln = clone.embeddings.LayerNorm
    assert ln.forward.__self__ is ln
    hf_lnorm.unpatch(model)
    assert STATE_ATTR in ln.__dict__  # unpatching the original leaves the copy alone
    inputs = dummy_inputs(model)
    with torch.no_grad():
        assert torch.allclose(clone(**inputs).last_hidden_state, model(**inputs).last_hidden_state, atol=1e-6)


def test_mixed_dtype_inputs_fall_back_to_the_original_forward():
    class PromotingNorm(nn.Module):
        """Returns fp32 for a bf16 input with fp32 params (type promotion), like many hand-written norms."""

        def __init__(self, h):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(h))
            self.bias = nn.Parameter(torch.randn(h))
            self.eps = 1e-5

        def forward(self, x):
            mu = x.mean(-1, keepdim=True)
            var = x.var(-1, unbiased=False, keepdim=True)
            return self.weight * (x - mu) / torch.sqrt(var + self.eps) + self.bias

    norm = PromotingNorm(16)
    x = torch.randn(3, 16).to(torch.bfloat16)
    ref = norm(x)
    hf_lnorm.patch(norm)
    rec = hf_lnorm.patch_report(norm)[0]
    assert rec.status == "patched" and "original forward" in rec.reason
    out = norm(x)
    assert out.dtype == ref.dtype == torch.float32 and torch.equal(out, ref)
    assert torch.allclose(norm(x.float()), PromotingNorm.forward(norm, x.float()), atol=1e-6)


# --------------------------------------------------------------------------- integrations


def test_peft_lora_both_orders():
    peft = pytest.importorskip("peft")
    cfg = dict(r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0)
    stock = peft.get_peft_model(_bert(), peft.LoraConfig(**cfg))
    inputs = dummy_inputs(stock.get_base_model())
    with torch.no_grad():
        ref = stock(**inputs).last_hidden_state
    # patch, then wrap
    first = peft.get_peft_model(hf_lnorm.patch(_bert()), peft.LoraConfig(**cfg))
    # wrap, then patch
    second = hf_lnorm.patch(peft.get_peft_model(_bert(), peft.LoraConfig(**cfg)))
    assert len(hf_lnorm.patch_report(second).patched) == 5
    for model in (first, second):
        assert sum(STATE_ATTR in m.__dict__ for m in model.modules()) == 5
        with torch.no_grad():
            assert (model(**inputs).last_hidden_state - ref).abs().max() <= 1e-5
        model.train()
        out = model(**inputs).last_hidden_state.sum()
        out.backward()
        assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
    hf_lnorm.unpatch(second)
    assert not any(STATE_ATTR in m.__dict__ for m in second.modules())


def test_trainer_step_same_loss_and_gradients(tmp_path):
    """Training (gradients: aten norms) and ``Trainer.predict`` (``no_grad``: the default CPU backend)
    of a patched BERT equal its unpatched twin's."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    g = torch.Generator().manual_seed(0)
    rows = {"input_ids": torch.randint(3, 99, (16, 8), generator=g).tolist(), "labels": torch.randint(0, 2, (16,), generator=g).tolist()}
    data = Dataset.from_dict(rows)

    def train(patched):
        model = _bert(head=AutoModelForSequenceClassification)
        if patched:
            hf_lnorm.patch(model)
        args = TrainingArguments(output_dir=str(tmp_path / f"run{patched}"), per_device_train_batch_size=8,
                                 per_device_eval_batch_size=8, max_steps=2, learning_rate=1e-3, logging_steps=1,
                                 report_to=[], save_strategy="no", seed=0, dataloader_num_workers=0, use_cpu=True)
        trainer = Trainer(model=model, args=args, train_dataset=data)
        _, train_calls = norm_calls(trainer.train)
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        predictions, predict_calls = norm_calls(lambda: trainer.predict(data).predictions)
        params = {n: p.detach().clone() for n, p in model.named_parameters()}
        return losses, params, torch.as_tensor(predictions), train_calls, predict_calls

    losses0, params0, predictions0, _, _ = train(False)
    losses1, params1, predictions1, train_calls, predict_calls = train(True)
    assert len(losses0) == 2 and losses0 == pytest.approx(losses1, abs=1e-5)
    for k in params0:  # parameters after two optimizer steps: equal gradients all along
        torch.testing.assert_close(params1[k], params0[k], atol=1e-5, rtol=1e-4)
    n_calls = assert_aten_only(train_calls, "Trainer.train")
    assert n_calls == 2 * 5  # two steps of 5 norms (embeddings + 2 layers x 2)
    assert predictions1.shape == (16, 2)
    torch.testing.assert_close(predictions1, predictions0, atol=1e-5, rtol=1e-4)
    assert_inference_backend(predict_calls, 2 * 5, n_covered=5, where="Trainer.predict")  # two batches of 8


def test_torch_compile_fullgraph_no_graph_break():
    model = hf_lnorm.patch(_bert())
    inputs = dummy_inputs(model)
    with torch.no_grad():
        ref = model(**inputs).last_hidden_state
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        out = compiled(**inputs).last_hidden_state
    assert torch.allclose(out, ref, atol=1e-6)
    torch._dynamo.reset()


def test_onnx_export_emits_layernormalization(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model = hf_lnorm.patch(_bert())
    inputs = dummy_inputs(model)

    class Wrapper(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    path = tmp_path / "bert.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapper(model), (inputs["input_ids"], inputs["attention_mask"]), str(path), opset_version=18, dynamo=True)
    graph = onnx.load(str(path))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("LayerNormalization") == 5, sorted(set(ops))


# --------------------------------------------------------------------------- real weights


def test_real_minilm_qa_logits_equal_within_fp32_rounding():
    torch.manual_seed(0)
    model = AutoModelForQuestionAnswering.from_pretrained(minilm_path()).eval()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path())
    enc = tok("Who wrote the letter?", "The letter was written by Elizabeth Bennet in the spring of that year.", return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc)
    hf_lnorm.patch(model)
    assert len(hf_lnorm.patch_report(model).patched) == 13
    with torch.no_grad():
        out = model(**enc)
    # fp32 rounding only: the fused residual blocks run hf_lnorm's C++ add+LayerNorm on CPU (another
    # summation order than aten's), every other patched norm is aten's own kernel
    for a, b in ((out.start_logits, ref.start_logits), (out.end_logits, ref.end_logits)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_switching_modes_undoes_the_old_mode_everywhere():
    model = _bert()
    inputs = dummy_inputs(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(**inputs).last_hidden_state
        hf_lnorm.patch(model, mode="quantized")
        assert (model(**inputs).last_hidden_state - ref).abs().max() > 0  # int8 is not exact
        hf_lnorm.patch(model, mode="fused")  # re-patch in another mode: int8 consumers must go too
        assert (model(**inputs).last_hidden_state - ref).abs().max() <= 1e-5
        hf_lnorm.unpatch(model)
        assert torch.equal(model(**inputs).last_hidden_state, ref)
    assert not [n for n, m in model.named_modules() if any(k.startswith("_hf_lnorm") for k in m.__dict__)]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
