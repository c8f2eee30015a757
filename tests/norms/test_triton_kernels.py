"""Triton kernels against torch: output and every gradient within 2x of torch's own error.

Runs on CUDA when present, otherwise on CPU under ``TRITON_INTERPRET=1``
(small row counts: the interpreter is slow). Hidden sizes 1, 7, 1023, 4097;
fp32 / bf16 / fp16; with and without weight and bias; with and without the
fused residual add.
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch

pytest.importorskip("triton")  # installed in both CI venvs; optional for users (extra "kernels")

from hf_lnorm.norms import ops  # noqa: E402

from ._precision import check_precision  # noqa: E402

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
HIDDEN = [1, 7, 1023, 4097]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _interpreted() -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    from hf_lnorm.norms.triton import kernels

    return isinstance(kernels._norm_fwd_kernel, InterpretedFunction)


@pytest.fixture(scope="module")
def interpreter_results(tmp_path_factory):
    """Outcomes of this module run in a subprocess with ``TRITON_INTERPRET=1``.

    Triton decides interpreter mode when ``triton`` is first imported, and other
    imports (transformers, torchao) import it early; so on a CPU-only machine
    whose Triton was imported without the flag, the kernel tests run in one
    child pytest process that sets it from the start.
    """
    xml = tmp_path_factory.mktemp("triton") / "results.xml"
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"],
        env=env, capture_output=True, text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    if not xml.exists():
        pytest.fail(f"interpreter subprocess produced no results:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        results[case.get("name")] = None if bad is None else (bad.get("message") or "") + "\n" + (bad.text or "")[-2000:]
    return results


@pytest.fixture
def triton_here(request):
    """True: run the test body here (CUDA, or CPU already in interpreter mode).

    False: the body already ran, and passed, in the ``TRITON_INTERPRET=1``
    subprocess (a failure there fails this test with the child's message).
    """
    if DEVICE == "cuda" or _interpreted():
        return True
    results = request.getfixturevalue("interpreter_results")
    name = request.node.name
    if name not in results:
        pytest.fail(f"{name} did not run in the TRITON_INTERPRET=1 subprocess")
    if results[name] is not None:
        pytest.fail(f"failed under TRITON_INTERPRET=1:\n{results[name]}")
    return False


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("affine", ["wb", "w", "b", "none"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_layer_norm_matches_torch(hidden, dtype, affine, residual, triton_here):
    if not triton_here:
        return
    check_precision("layer_norm", dtype, hidden, "w" in affine, "b" in affine, residual, "triton", DEVICE)


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("has_weight", [True, False], ids=["w", "none"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_rms_norm_llama_matches_torch(hidden, dtype, has_weight, residual, triton_here):
    if not triton_here:
        return
    check_precision("rms_norm_llama", dtype, hidden, has_weight, False, residual, "triton", DEVICE)


@pytest.mark.parametrize("variant", ["rms_norm_gemma", "rms_norm_t5", "rms_norm_torch"])
@pytest.mark.parametrize("hidden", [7, 1023])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_other_rms_conventions_match_torch(variant, hidden, dtype, triton_here):
    if not triton_here:
        return
    check_precision(variant, dtype, hidden, True, False, hidden == 7, "triton", DEVICE)


def test_mixed_precision_params_keep_the_original_output_dtype(triton_here):
    if not triton_here:
        return
    # bf16 activations with fp32 parameters: Llama promotes to fp32, T5 returns the fp32 product,
    # LayerNorm keeps bf16 (what nn.LayerNorm does with mixed dtypes).
    x = torch.randn(3, 8, device=DEVICE).bfloat16()
    w = torch.rand(8, device=DEVICE) + 0.5
    b = torch.randn(8, device=DEVICE)
    for variant, bias, want in (("layer_norm", b, torch.bfloat16), ("rms_norm_llama", None, torch.float32), ("rms_norm_t5", None, torch.float32)):
        y, _, _, _ = ops.norm_fwd(x, None, w, bias, 1e-6, variant, "triton")
        ref, _, _, _ = ops.norm_fwd(x, None, w, bias, 1e-6, variant, "aten")
        assert y.dtype == want == ref.dtype
        torch.testing.assert_close(y, ref, atol=1e-2, rtol=1e-2)


def test_noncontiguous_and_3d_inputs(triton_here):
    if not triton_here:
        return
    x = torch.randn(2, 4, 16, device=DEVICE)[:, :, ::2]  # stride 2 on the last dim
    r = torch.randn(2, 4, 8, device=DEVICE)
    w, b = torch.rand(8, device=DEVICE), torch.randn(8, device=DEVICE)
    y, s, mean, rstd = ops.norm_fwd(x, r, w, b, 1e-5, "layer_norm", "triton")
    want = torch.nn.functional.layer_norm(x + r, (8,), w, b, 1e-5)
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s, x + r)
    assert mean.shape == rstd.shape == (2, 4)


def test_empty_batch(triton_here):
    if not triton_here:
        return
    x = torch.randn(0, 8, device=DEVICE, requires_grad=True)
    w = torch.rand(8, device=DEVICE, requires_grad=True)
    y = ops.norm_fwd(x, None, w, None, 1e-5, "rms_norm_llama", "triton")[0]
    y.sum().backward()
    assert y.shape == (0, 8) and torch.equal(w.grad, torch.zeros(8, device=DEVICE))


def test_fused_norm_triton_backend_every_variant(triton_here):
    if not triton_here:
        return
    from hf_lnorm.norms.fused import aten_norm, fused_norm
    from hf_lnorm.norms.reference import VARIANTS, NormSpec

    for variant in VARIANTS:
        for has_weight in (True, False):
            has_bias = variant.startswith("layer_norm") and has_weight
            for ndim in ((1, 2) if variant != "layer_norm_channels_first" else (1,)):
                spec = NormSpec(variant, normalized_ndim=ndim, has_weight=has_weight, has_bias=has_bias)
                if variant == "layer_norm_channels_first":
                    x, pshape = torch.randn(2, 6, 3, 2, device=DEVICE), (6,)
                else:
                    x, pshape = torch.randn(2, 3, 4, 5, device=DEVICE), (4, 5)[-ndim:]
                w = torch.rand(pshape, device=DEVICE) + 0.5 if has_weight else None
                b = torch.randn(pshape, device=DEVICE) if has_bias else None
                got = fused_norm(spec, x, w, b, 1e-5, backend="triton")
                want = aten_norm(spec, x, w, b, 1e-5)
                assert got.dtype == want.dtype and got.shape == want.shape, spec
                torch.testing.assert_close(got, want, atol=2e-6, rtol=2e-6, msg=str(spec))


def test_patch_with_forced_triton_backend(triton_here):
    if not triton_here:
        return
    import hf_lnorm
    from hf_lnorm.norms.residual import fused_block_names

    from .test_residual_fusion import PostLN

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.LayerNorm(12)).to(DEVICE)
    x = torch.randn(3, 8, device=DEVICE, requires_grad=True)
    want = model(x)
    (gx_want,) = torch.autograd.grad(want.square().sum(), x)
    hf_lnorm.patch(model, backend="triton")
    assert [r.status for r in hf_lnorm.patch_report(model)] == ["patched"]
    got = model(x)
    (gx,) = torch.autograd.grad(got.square().sum(), x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx, gx_want, atol=1e-5, rtol=1e-5)
    block = PostLN().to(DEVICE).eval()
    h, r = torch.randn(2, 3, 12, device=DEVICE), torch.randn(2, 3, 8, device=DEVICE)
    want = block(h, r)
    hf_lnorm.patch(block, backend="triton")
    assert fused_block_names(block) == [""]
    torch.testing.assert_close(block(h, r), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", ["layer_norm", "rms_norm_llama", "rms_norm_gemma"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_eager_autograd_path_equals_the_custom_op(variant, residual, triton_here):
    """``triton_norm_fwd`` (eager: a plain autograd.Function) and the custom op run the same kernels."""
    if not triton_here:
        return
    torch.manual_seed(0)
    x = torch.randn(6, 33, device=DEVICE, requires_grad=True)
    r = torch.randn(6, 33, device=DEVICE, requires_grad=True) if residual else None
    w = (torch.rand(33, device=DEVICE) + 0.5).requires_grad_()
    b = torch.randn(33, device=DEVICE, requires_grad=True) if variant == "layer_norm" else None
    inputs = [t for t in (x, r, w, b) if t is not None]
    gy, gs = torch.randn(6, 33, device=DEVICE), torch.randn(6, 33, device=DEVICE)

    y, s = ops.triton_norm_fwd(x, r, w, b, 1e-5, variant)
    y_op, s_op, _, _ = ops.norm_fwd(x, r, w, b, 1e-5, variant, "triton")
    assert torch.equal(y, y_op)
    if residual:
        assert torch.equal(s, s_op)
    else:
        assert s is x
    outs, outs_op = ([y, s], [y_op, s_op]) if residual else ([y], [y_op])
    grads = [gy, gs] if residual else [gy]
    for got, want in zip(torch.autograd.grad(outs, inputs, grads), torch.autograd.grad(outs_op, inputs, grads)):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
