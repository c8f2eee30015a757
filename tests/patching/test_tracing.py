"""Patched models trace wherever the stock model traces, take one numeric path, and honour a forced backend.

Tracers: ``torch.fx.symbolic_trace``, transformers' fx tracer (4.x only: 5.x removed
``transformers.utils.fx``), ``torch.jit.trace``, ``torch.export`` and ONNX export. Each case
first traces the STOCK model; where that fails the case is skipped with the stock error, and
where it works the patched model must trace too and its graph must equal its own eager
output bit for bit (as the stock graph equals stock eager). A last test exports one model in a
thread while a second patched model runs beside it, unaffected.
"""

from __future__ import annotations

import io
import sys
import threading
import warnings

import pytest
import torch
from torch import nn
from transformers import AutoModel

import hf_lnorm
from hf_lnorm.norms import cpu
from hf_lnorm.norms.residual import fused_block_names

from .archs import tiny_config

CPP_OP = "hf_lnorm_cpu::add_norm"


class CustomNorm(nn.Module):
    """A user-written RMSNorm (not a torch leaf module, not a known class)."""

    def __init__(self, hidden: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden))
        self.eps = eps

    def forward(self, x):
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class Ids(nn.Module):
    """``ids -> last_hidden_state`` (T5: the same ids as decoder input) so every tracer sees one tensor in, one out."""

    def __init__(self, model: nn.Module, seq2seq: bool = False):
        super().__init__()
        self.model, self.seq2seq = model, seq2seq

    def forward(self, ids):
        if self.seq2seq:
            return self.model(input_ids=ids, decoder_input_ids=ids).last_hidden_state
        return self.model(input_ids=ids).last_hidden_state


def _tiny(arch: str, seed: int = 0) -> nn.Module:
    config = tiny_config(arch)
    config.use_cache = False
    torch.manual_seed(seed)
    with torch.random.fork_rng():
        model = AutoModel.from_config(config, attn_implementation="eager")
    with torch.no_grad():  # non-trivial norm parameters
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _custom(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 32), CustomNorm(32), nn.Linear(32, 8)).eval()
    with torch.no_grad():
        model[1].weight.add_(torch.randn(32) * 0.1)
    return model


def _ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 99, (2, 7), generator=torch.Generator().manual_seed(seed))


# (name, builder of (module, example input), norm class the patch must cover)
def _unit(name: str, patched: bool, backend=None):
    if name == "custom":
        model = _custom()
        x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(2))
        root = model
    else:
        arch = {"bert": "bert", "llama": "llama", "t5": "t5"}[name.split("-")[0]]
        model = _tiny(arch)
        if name == "bert":
            root, x = Ids(model), _ids()
        elif name == "llama":
            root, x = Ids(model), _ids()
        elif name == "t5":
            root, x = Ids(model, seq2seq=True), _ids()
        elif name == "bert-output":  # BertOutput: a fused post-LN residual block once patched
            root = model.encoder.layer[0].output
            x = (torch.randn(2, 7, 37), torch.randn(2, 7, 32))
        elif name == "llama-norm":  # LlamaRMSNorm after a projection
            root = nn.Sequential(model.layers[0].mlp, model.norm)
            x = torch.randn(2, 7, 32)
        elif name == "t5-ff":  # T5LayerFF: T5LayerNorm + MLP + residual
            root = model.encoder.block[0].layer[1]
            x = torch.randn(2, 7, 32)
        else:
            raise AssertionError(name)
    if patched:
        hf_lnorm.patch(model, backend=backend)
        assert any(r.status == "patched" for r in hf_lnorm.patch_report(model))
    return root, (x if isinstance(x, tuple) else (x,))


def _trace(tracer: str, root: nn.Module, args: tuple):
    """A callable graph of ``root`` recorded by ``tracer``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if tracer == "fx":
            return torch.fx.symbolic_trace(root)
        if tracer == "jit":
            return torch.jit.trace(root, args, check_trace=False)
        if tracer == "export":
            return torch.export.export(root, args).module()
        if tracer == "hf-fx":
            hf_fx = pytest.importorskip("transformers.utils.fx", reason="transformers 5.x has no fx tracer")
            inner = root.model
            names = ["input_ids", "decoder_input_ids"] if root.seq2seq else ["input_ids"]
            graph = hf_fx.symbolic_trace(inner, input_names=names)
            return lambda ids: graph(**{n: ids for n in names})["last_hidden_state"]
    raise AssertionError(tracer)


UNITS = ["bert-output", "llama-norm", "t5-ff", "custom", "bert", "llama", "t5"]
TRACERS = ["fx", "hf-fx", "jit", "export"]


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("unit", UNITS)
@pytest.mark.parametrize("backend", [None, "aten"], ids=["default", "aten"])
def test_patched_traces_where_stock_traces_and_matches_eager_bitwise(unit, tracer, backend):
    if tracer == "hf-fx" and unit not in ("bert", "llama", "t5"):
        pytest.skip("transformers' fx tracer takes whole transformers models only")
    stock, args = _unit(unit, patched=False)
    try:
        stock_graph = _trace(tracer, stock, args)
        with torch.no_grad():
            stock_traced = stock_graph(*args)
    except pytest.skip.Exception:
        raise
    except Exception as exc:
        pytest.skip(f"the stock {unit} does not trace with {tracer} either: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:120] if str(exc) else ''}")
    with torch.no_grad():
        assert torch.equal(stock_traced, stock(*args))  # the property the patched model must keep

    patched, args = _unit(unit, patched=True, backend=backend)
    graph = _trace(tracer, patched, args)  # must not raise where the stock model traced
    with torch.no_grad():
        eager = patched(*args)
        traced = graph(*args)
    assert torch.equal(traced, eager), f"traced vs eager: max diff {(traced - eager).abs().max():.3e}"


def test_fx_graph_of_a_cpp_patched_norm_calls_the_op_eager_runs():
    if not cpu.is_available():
        pytest.skip(f"the C++ kernels do not build here: {cpu.unavailable_reason()}")
    root, args = _unit("t5-ff", patched=True, backend="cpp")
    code = torch.fx.symbolic_trace(root).code
    assert "hf_lnorm.norm_fwd" in code and "cpp_inference" in code
    root, args = _unit("t5-ff", patched=True, backend="aten")
    code = torch.fx.symbolic_trace(root).code
    assert "hf_lnorm" not in code and "rms_norm" in code


def _onnx_ops(model: nn.Module, args: tuple, dynamo: bool) -> set:
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(model, args, dynamo=True, opset_version=18, verbose=False)
            proto = program.model_proto
        else:
            torch.onnx.export(model, args, buf, opset_version=17, dynamo=False,
                              dynamic_axes={"x": {0: "batch", 1: "seq"}}, input_names=["x"])
            proto = onnx.load_from_string(buf.getvalue())
    return {(n.domain or "", n.op_type) for n in proto.graph.node}


@pytest.mark.parametrize("unit", ["bert", "llama", "t5", "custom"])
def test_onnx_torchscript_export_of_patched_models_has_standard_ops(unit):
    pytest.importorskip("onnx")
    stock, args = _unit(unit, patched=False)
    try:
        stock_ops = _onnx_ops(stock, args, dynamo=False)
    except Exception as exc:
        pytest.skip(f"the stock {unit} does not export with torch.onnx (dynamo=False): {type(exc).__name__}")
    patched, args = _unit(unit, patched=True)
    ops = _onnx_ops(patched, args, dynamo=False)
    assert all(domain in ("", "ai.onnx") for domain, _ in ops), sorted(ops)
    if unit == "bert":
        assert ("", "LayerNormalization") in ops and ("", "LayerNormalization") in stock_ops
    assert {op for _, op in ops} == {op for _, op in stock_ops}


def test_onnx_dynamo_export_of_a_patched_bert_has_standard_ops():
    pytest.importorskip("onnxscript")
    patched, args = _unit("bert", patched=True)
    ops = _onnx_ops(patched, args, dynamo=True)
    assert ("", "LayerNormalization") in ops
    assert all(domain in ("", "ai.onnx") for domain, _ in ops), sorted(ops)


def _profiled_ops(model, args) -> tuple:
    """(output, names of the ops this thread ran): the profiler may also see other threads' ops."""
    label = "hf_lnorm_test_forward"
    with torch.no_grad(), torch.profiler.profile() as prof:
        with torch.profiler.record_function(label):
            out = model(*args)
    events = prof.events()
    thread = next(e.thread for e in events if e.name == label)
    return out, [e.name for e in events if e.thread == thread and e.name != label]


def test_forced_aten_backend_equals_stock_bitwise_in_fused_blocks():
    stock, args = _unit("bert", patched=False)
    patched, _ = _unit("bert", patched=True, backend="aten")
    assert fused_block_names(patched.model), "BERT's post-LN blocks should be fused"
    want, _ = _profiled_ops(stock, args)
    got, names = _profiled_ops(patched, args)
    assert torch.equal(got, want), f"max diff {(got - want).abs().max():.3e}"
    assert CPP_OP not in names and not any(n.startswith("hf_lnorm") for n in names)


def test_forced_cpp_backend_runs_the_cpp_kernel_in_norms_and_fused_blocks():
    if not cpu.is_available():
        pytest.skip(f"the C++ kernels do not build here: {cpu.unavailable_reason()}")
    patched, args = _unit("bert", patched=True, backend="cpp")
    blocks = len(fused_block_names(patched.model))
    assert blocks == 4  # 2 layers x (attention output, output)
    _, names = _profiled_ops(patched, args)
    assert names.count(CPP_OP) == blocks + 1  # + the embeddings' LayerNorm


def _module_state() -> dict:
    """Identity of every non-dunder module-level value of every loaded hf_lnorm module."""
    return {
        name: {k: id(v) for k, v in vars(mod).items() if not (k.startswith("__") and k.endswith("__"))}
        for name, mod in list(sys.modules.items())
        if name == "hf_lnorm" or name.startswith("hf_lnorm.")
    }


def test_export_in_one_thread_leaves_a_model_running_in_another_unaffected(tmp_path):
    pytest.importorskip("onnxruntime")
    from hf_lnorm.export import METHOD_OPTIMUM, export

    to_export = _tiny("bert", seed=3)
    hf_lnorm.patch(to_export)
    runner, args = _unit("bert", patched=True)
    # warm up both (first-call builds and imports)
    export(to_export, tmp_path / "warmup", task="feature-extraction", verify=False)
    before = _module_state()

    errors, outputs, paths, reference = [], [], [], []
    started, done = threading.Event(), threading.Event()

    def run_forwards():
        try:
            # the reference output and op path, from this thread (its intra-op thread pool) before the export starts
            reference.append(_profiled_ops(runner, args))
            started.set()
            while not done.is_set() or not outputs:
                out, ops = _profiled_ops(runner, args)
                outputs.append(out)
                paths.append(ops)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            started.set()

    worker = threading.Thread(target=run_forwards)
    worker.start()
    try:
        assert started.wait(timeout=120)
        result = export(to_export, tmp_path / "onnx", task="feature-extraction")
    finally:
        done.set()
        worker.join(timeout=120)
    assert not errors, errors
    assert (tmp_path / "onnx" / "model.onnx").is_file() and result.max_abs_err < 1e-4
    want, want_ops = reference[0]
    assert CPP_OP in want_ops or not cpu.is_available()
    assert len(outputs) >= 2
    def norm_ops(ops):
        return sorted(n for n in ops if "norm" in n)

    for out, ops in zip(outputs, paths):
        if result.method == METHOD_OPTIMUM:
            assert sorted(ops) == sorted(want_ops)  # the same path: the same ops, the C++ kernel included
            assert torch.equal(out, want)
        else:
            # torch.export's process-wide is_exporting/is_compiling flags make transformers build its
            # attention masks differently in EVERY thread (a stock model's too: extra mask ops, outputs
            # ~4e-7 apart), so only the norm path is hf_lnorm's to keep here
            assert norm_ops(ops) == norm_ops(want_ops)
            torch.testing.assert_close(out, want, atol=1e-6, rtol=1e-6)
    after = _module_state()
    changed = sorted(f"{m}.{k}" for m in before for k, v in before[m].items() if after.get(m, {}).get(k) != v)
    assert not changed, f"module-level attributes rebound during export: {changed}"
