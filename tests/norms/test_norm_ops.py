"""The custom ops and public functions of ``hf_lnorm.norms.ops`` (aten path, CPU).

Precision against torch, fake/meta and autograd registration (``opcheck``),
``torch.compile(fullgraph=True)`` with no graph break and the op in the graph,
``torch.export`` keeping one op per norm, and ONNX export to standard ops.
"""

import pytest
import torch
from torch import nn

from hf_lnorm.norms import cpu, ops

from ._precision import check_precision


@pytest.mark.parametrize("variant", ops.VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_aten_impl_within_2x_of_torch(variant, dtype, residual):
    for hidden in (1, 7, 1023):
        check_precision(variant, dtype, hidden, True, variant == "layer_norm", residual, "aten")
    check_precision(variant, dtype, 7, False, False, residual, "aten")


def test_public_functions_match_plain_torch():
    x, r = torch.randn(2, 3, 16), torch.randn(2, 3, 16)
    w, b = torch.rand(16) + 0.5, torch.randn(16)
    F = torch.nn.functional
    torch.testing.assert_close(ops.layer_norm(x, w, b, 1e-5), F.layer_norm(x, (16,), w, b, 1e-5))
    y, s = ops.add_layer_norm(x, r, w, b, 1e-5)
    torch.testing.assert_close(s, x + r)
    torch.testing.assert_close(y, F.layer_norm(x + r, (16,), w, b, 1e-5))
    want = w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-6), want)
    y, s = ops.add_rms_norm(x, r, w, 1e-6)
    torch.testing.assert_close(y, ops.rms_norm(x + r, w, 1e-6))
    # the op itself (what compile / CUDA use) gives the same numbers as the direct eager path, which in
    # float32 CPU inference is the C++ kernel when it builds here (tests/norms/test_cpu_kernels.py)
    impl = "cpp" if cpu.is_available() else "aten"
    y_op, s_op, _, _ = ops.norm_fwd(x, r, w, b, 1e-5, "layer_norm", impl)
    torch.testing.assert_close(y_op, ops.add_layer_norm(x, r, w, b, 1e-5)[0], atol=0, rtol=0)


def test_in_place_variant_matches_functional_and_reuses_the_residual():
    x, r = torch.randn(4, 5, 32), torch.randn(4, 5, 32)
    w, b = torch.rand(32), torch.randn(32)
    want_y, want_s = ops.add_layer_norm(x, r, w, b, 1e-12)
    x0 = x.clone()
    y, s = ops.add_layer_norm_(x, r, w, b, 1e-12)
    assert s is r and torch.equal(x, x0)
    torch.testing.assert_close(s, want_s, atol=0, rtol=0)
    torch.testing.assert_close(y, want_y, atol=0, rtol=0)
    with pytest.raises(ValueError, match="one shape and dtype"):
        ops.add_layer_norm_(torch.randn(2, 4), torch.randn(2, 4).double())
    with pytest.raises(RuntimeError, match="autograd"):
        ops.add_layer_norm_(torch.randn(2, 4, requires_grad=True), torch.randn(2, 4), None, None, 1e-5)


def test_bad_arguments_are_named():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="'rms_bogus'"):
        ops.norm_fwd(x, None, None, None, 1e-5, "rms_bogus", "aten")
    with pytest.raises(ValueError, match="'cuda_magic'"):
        ops.norm_fwd(x, None, None, None, 1e-5, "layer_norm", "cuda_magic")


@pytest.mark.parametrize("old, new", sorted(ops._OLD_VARIANT_NAMES.items()))
def test_deprecated_variant_names_warn_and_give_identical_results(old, new):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, generator=gen, requires_grad=True)
    r = torch.randn(3, 8, generator=gen)
    w = (torch.rand(8, generator=gen) + 0.5).requires_grad_()
    want = ops.norm_fwd(x, r, w, None, 1e-6, new, "aten")
    gx_want, gw_want = torch.autograd.grad(want[0].sum(), (x, w))
    with pytest.warns(DeprecationWarning, match=f"variant '{old}' is deprecated: use '{new}'"):
        got = ops.norm_fwd(x, r, w, None, 1e-6, old, "aten")
        gx, gw = torch.autograd.grad(got[0].sum(), (x, w))
    for a, b in zip(got + (gx, gw), want + (gx_want, gw_want)):
        assert torch.equal(a, b)
    with pytest.warns(DeprecationWarning, match="ops.KINDS is deprecated: use hf_lnorm.norms.ops.VARIANTS"):
        assert ops.KINDS is ops.VARIANTS


def test_triton_norm_fwd_deprecated_kind_keyword_passes_the_new_name(monkeypatch):
    seen = []
    monkeypatch.setattr(ops, "_direct_triton", lambda x, interpreted_ok=False: False)
    monkeypatch.setattr(ops, "norm_fwd", lambda x, r, w, b, eps, variant, impl: seen.append(variant) or (x, x, x, x))
    x = torch.randn(2, 4)
    with pytest.warns(DeprecationWarning, match=r"kind=\.\.\.\) is deprecated"), \
            pytest.warns(DeprecationWarning, match="'rms_t5' is deprecated: use 'rms_norm_t5'"):
        ops.triton_norm_fwd(x, None, None, None, 1e-6, kind="rms_t5")
    ops.triton_norm_fwd(x, None, None, None, 1e-6, "rms_norm_t5")
    assert seen == ["rms_norm_t5", "rms_norm_t5"]
    with pytest.raises(TypeError, match="both 'variant' and its deprecated name 'kind'"):
        ops.triton_norm_fwd(x, None, None, None, 1e-6, "layer_norm", kind="layer_norm")


def test_opcheck_fake_and_autograd_registration():
    x = torch.randn(3, 8, requires_grad=True)
    r = torch.randn(3, 8, requires_grad=True)
    w = torch.rand(8, requires_grad=True)
    b = torch.randn(8, requires_grad=True)
    for args in (
        (x, r, w, b, 1e-5, "layer_norm", "aten"),
        (x, None, w, None, 1e-6, "rms_norm_llama", "aten"),
    ):
        torch.library.opcheck(ops.norm_fwd, args)


class _Block(nn.Module):
    """A pre-LN block written with the public functions."""

    def __init__(self, n=16):
        super().__init__()
        self.ln = nn.LayerNorm(n)
        self.post = nn.LayerNorm(n)
        self.lin = nn.Linear(n, n)
        self.gain = nn.Parameter(torch.rand(n) + 0.5)

    def forward(self, x):
        h = ops.layer_norm(x, self.ln.weight, self.ln.bias, 1e-5)
        h, resid = ops.add_layer_norm(self.lin(h), x, self.post.weight, self.post.bias, 1e-5)
        h, resid = ops.add_rms_norm(self.lin(h), resid, self.gain, 1e-6)
        return ops.rms_norm(h + resid, self.gain, 1e-6)


def test_compile_fullgraph_no_graph_break_same_outputs_and_grads():
    torch._dynamo.reset()
    block = _Block()
    x = torch.randn(2, 5, 16)
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    out = torch.compile(block, backend=recording_backend, fullgraph=True)(x)
    assert len(graphs) == 1  # fullgraph=True would raise on a break; one graph, one call
    targets = [n.target for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.hf_lnorm.norm_fwd.default) == 4
    torch.testing.assert_close(out, block(x))

    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    xc, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    compiled(xc).square().sum().backward()
    grads_c = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    block(xe).square().sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad)
    for gc, p in zip(grads_c, block.parameters()):
        torch.testing.assert_close(gc, p.grad)


def test_torch_export_keeps_one_op_per_norm():
    ep = torch.export.export(_Block(), (torch.randn(2, 5, 16),))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.hf_lnorm.norm_fwd.default) == 4
    assert not any("layer_norm" in str(t) and "hf_lnorm" not in str(t) for t in targets)


STANDARD_DOMAINS = {"", "ai.onnx"}


def test_onnx_export_emits_standard_layer_normalization(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    block = _Block().eval()
    x = torch.randn(2, 5, 16)
    path = tmp_path / "block.onnx"
    torch.onnx.export(block, (x,), str(path), opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    ops_used = {(n.domain, n.op_type) for n in model.graph.node}
    assert all(domain in STANDARD_DOMAINS for domain, _ in ops_used), ops_used
    assert sum(n.op_type == "LayerNormalization" for n in model.graph.node) == 2
    assert any(o.domain in STANDARD_DOMAINS and o.version == 17 for o in model.opset_import)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), block(x).detach(), atol=1e-5, rtol=1e-5)


def test_onnx_dynamo_export_standard_ops_only(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    path = tmp_path / "block_dynamo.onnx"
    torch.onnx.export(_Block().eval(), (torch.randn(2, 5, 16),), str(path), opset_version=18, dynamo=True)
    model = onnx.load(str(path))
    assert all(n.domain in STANDARD_DOMAINS for n in model.graph.node)
    assert sum(n.op_type == "LayerNormalization" for n in model.graph.node) == 2
