"""Backend choice in ``hf_lnorm.norms.fused``: defaults, forced backends, clear errors."""

import os

import pytest
import torch

import hf_lnorm
from hf_lnorm.norms import fused, ops
from hf_lnorm.norms.reference import NormSpec


def test_default_backend_follows_the_device():
    from hf_lnorm.norms import cpu

    want = "triton" if (torch.cuda.is_available() and ops.triton_available()) else ("cpp" if cpu.is_available() else "aten")
    assert fused.resolve_backend(None) == want == fused.resolve_backend("auto") == fused.default_backend()
    assert fused.resolve_backend("aten") == "aten"
    assert "aten" in fused.available_backends()


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="'tpu_magic'.*accepted: auto, aten, triton, cpp"):
        fused.resolve_backend("tpu_magic")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA to force an unavailable Triton")
def test_forcing_triton_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="backend 'triton' was forced but is not available: .*(CUDA|not installed)"):
        fused.resolve_backend("triton")
    with pytest.raises(ValueError, match="triton"):
        hf_lnorm.patch(torch.nn.LayerNorm(4), backend="triton")
    with pytest.raises(RuntimeError, match="impl='triton' was forced"):
        ops.norm_fwd(torch.randn(2, 4), None, None, None, 1e-5, "layer_norm", "triton")


def test_forcing_triton_when_it_is_not_installed(monkeypatch):
    monkeypatch.setattr(ops, "triton_available", lambda: False)
    with pytest.raises(ValueError, match="Triton is not installed"):
        fused.resolve_backend("triton")
    # without Triton the automatic choice silently falls back to the CPU paths
    from hf_lnorm.norms import cpu

    assert fused.default_backend() == ("cpp" if cpu.is_available() else "aten")
    spec = NormSpec("layer_norm", has_bias=True)
    x = torch.randn(3, 8)
    torch.testing.assert_close(fused.fused_norm(spec, x, None, None, 1e-5), torch.nn.functional.layer_norm(x, (8,)))
    y = ops.norm_fwd(x, None, None, None, 1e-5, "layer_norm", "auto")[0]
    torch.testing.assert_close(y, torch.nn.functional.layer_norm(x, (8,)))


def test_triton_backend_on_cpu_tensor_without_interpreter_uses_aten(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    spec = NormSpec("rms_norm_gemma", eps_attr="eps", has_weight=True)
    x, w = torch.randn(3, 8), torch.randn(8)
    torch.testing.assert_close(fused.triton_norm(spec, x, w, None, 1e-6), fused.aten_norm(spec, x, w, None, 1e-6))


def test_cpp_backend_patched_norms_match_aten_and_fall_back_where_it_does_not_apply(monkeypatch):
    from hf_lnorm.norms import cpu
    from hf_lnorm.norms.reference import LAYER_NORM, LAYER_NORM_CHANNELS_FIRST, RMS_NORM_GEMMA, RMS_NORM_LLAMA, NormSpec

    if not cpu.is_available():
        pytest.skip(f"the C++ CPU kernels cannot run here: {cpu.unavailable_reason()}")
    x, w, b = torch.randn(3, 5, 24), torch.rand(24) + 0.5, torch.randn(24)
    ln = NormSpec(LAYER_NORM)
    hits = cpu.cache_info()["misses"] + cpu.cache_info()["hits"]
    y = fused.fused_norm(ln, x, w, b, 1e-5, backend="cpp")
    assert cpu.cache_info()["misses"] + cpu.cache_info()["hits"] == hits + 1  # the kernel ran
    torch.testing.assert_close(y, fused.aten_norm(ln, x, w, b, 1e-5), atol=1e-6, rtol=1e-6)
    rms = NormSpec(RMS_NORM_LLAMA, eps_attr="variance_epsilon")
    torch.testing.assert_close(fused.fused_norm(rms, x, w, None, 1e-6, backend="cpp"),
                               fused.aten_norm(rms, x, w, None, 1e-6), atol=1e-6, rtol=1e-6)
    # cases the kernel does not cover take aten, bit for bit
    gemma = NormSpec(RMS_NORM_GEMMA, eps_attr="eps")
    assert torch.equal(fused.fused_norm(gemma, x, w, None, 1e-6, backend="cpp"), fused.aten_norm(gemma, x, w, None, 1e-6))
    cf = NormSpec(LAYER_NORM_CHANNELS_FIRST)
    img = torch.randn(2, 24, 3, 3)
    assert torch.equal(fused.fused_norm(cf, img, w, b, 1e-6, backend="cpp"), fused.aten_norm(cf, img, w, b, 1e-6))
    assert torch.equal(fused.fused_norm(ln, x.bfloat16(), None, None, 1e-5, backend="cpp"),
                       fused.aten_norm(ln, x.bfloat16(), None, None, 1e-5))
    xg = x.clone().requires_grad_()
    assert torch.equal(fused.fused_norm(ln, xg, w, b, 1e-5, backend="cpp"), fused.aten_norm(ln, x, w, b, 1e-5))
    monkeypatch.setenv("HF_LNORM_CPU_KERNELS", "0")
    with pytest.raises(ValueError, match="backend 'cpp' was forced but is not available: disabled by HF_LNORM_CPU_KERNELS=0"):
        fused.resolve_backend("cpp")
