"""Property tests: ``norms/reference.py`` (and the aten fused path) against the original modules.

Random shapes, eps, dtypes (fp32; bf16/fp16 with fp32 statistics), affine and
bias on and off. The originals are the classes transformers and torch ship.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from transformers.models.convnext.modeling_convnext import ConvNextLayerNorm
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.t5.modeling_t5 import T5LayerNorm

from hf_lnorm.norms import reference as R
from hf_lnorm.norms.fused import aten_norm
from hf_lnorm.patching import classify

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _tol(dtype, y):
    # fp32: rounding only. Half types: the reference and the original may round
    # an fp32 result differently by one unit in the last place.
    scale = max(1.0, float(y.float().abs().max()))
    return (1e-5 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps) * scale


def _close(ours, theirs, dtype):
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    err = float((ours.float() - theirs.float()).abs().max())
    assert err <= _tol(dtype, theirs), f"max abs err {err}"


def _randomize(module, gen, gain_offset=1.0):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (gain_offset if p.dim() and "weight" in _pname(module, p) else 0.0))
    return module


def _pname(module, p):
    return next(n for n, q in module.named_parameters() if q is p)


# Hidden size 1 is left out: with tiny eps it is ill-conditioned (x - mean is pure rounding noise
# amplified by 1/sqrt(eps)), so no two implementations agree there.
shapes = st.tuples(st.integers(1, 3), st.integers(1, 5), st.sampled_from([2, 7, 16, 33, 64]))
eps_values = st.sampled_from([1e-12, 1e-6, 1e-5, 1e-3])


@SETTINGS
@given(shape=shapes, eps=eps_values, dtype=st.sampled_from(DTYPES), affine=st.booleans(), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_layer_norm_matches_nn_layernorm(shape, eps, dtype, affine, bias, seed):
    gen = torch.Generator().manual_seed(seed)
    mod = _randomize(nn.LayerNorm(shape[-1], eps=eps, elementwise_affine=affine, bias=bias), gen).to(dtype)
    x = (torch.randn(shape, generator=gen) * 3 + 1).to(dtype)
    with torch.no_grad():
        theirs = mod(x)
        w = mod.weight if affine else None
        b = mod.bias if affine and bias else None
        _close(R.layer_norm(x, w, b, eps), theirs, dtype)
        spec = R.NormSpec(R.LAYER_NORM, has_weight=affine, has_bias=affine and bias)
        _close(aten_norm(spec, x, w, b, eps), theirs, dtype)


@pytest.mark.parametrize(
    "cls,variant,eps_attr",
    [(LlamaRMSNorm, R.RMS_NORM_LLAMA, "variance_epsilon"), (T5LayerNorm, R.RMS_NORM_T5, "variance_epsilon"),
     (GemmaRMSNorm, R.RMS_NORM_GEMMA, "eps")],
)
@SETTINGS
@given(shape=shapes, eps=eps_values, dtype=st.sampled_from(DTYPES), mixed=st.booleans(), seed=st.integers(0, 2**16))
def test_rms_norm_matches_transformers(cls, variant, eps_attr, shape, eps, dtype, mixed, seed):
    gen = torch.Generator().manual_seed(seed)
    mod = cls(shape[-1], eps=eps)
    _randomize(mod, gen, gain_offset=0.0 if variant == R.RMS_NORM_GEMMA else 1.0)
    if not mixed:  # mixed: fp32 parameters with a half input, as under autocast-free mixed precision
        mod = mod.to(dtype)
    assert getattr(mod, eps_attr) == eps
    x = (torch.randn(shape, generator=gen) * 3 + 1).to(dtype)
    with torch.no_grad():
        theirs = mod(x)
        _close(R.rms_norm(x, mod.weight, eps, variant), theirs, dtype)
        spec = R.NormSpec(variant, eps_attr=eps_attr)
        _close(aten_norm(spec, x, mod.weight, None, eps), theirs, dtype)


@SETTINGS
@given(shape=shapes, eps=st.one_of(st.none(), eps_values), dtype=st.sampled_from(DTYPES), affine=st.booleans(), seed=st.integers(0, 2**16))
def test_rms_norm_matches_nn_rmsnorm(shape, eps, dtype, affine, seed):
    gen = torch.Generator().manual_seed(seed)
    mod = _randomize(nn.RMSNorm(shape[-1], eps=eps, elementwise_affine=affine), gen).to(dtype)
    x = (torch.randn(shape, generator=gen) * 3 + 1).to(dtype)
    with torch.no_grad():
        theirs = mod(x)
        w = mod.weight if affine else None
        real_eps = eps if eps is not None else torch.finfo(torch.float32).eps
        _close(R.rms_norm(x, w, real_eps, R.RMS_NORM_TORCH), theirs, dtype)
        spec = R.NormSpec(R.RMS_NORM_TORCH, has_weight=affine)
        _close(aten_norm(spec, x, w, None, eps), theirs, dtype)


@SETTINGS
@given(c=st.sampled_from([2, 3, 8, 17]), hw=st.tuples(st.integers(1, 4), st.integers(1, 4)), eps=eps_values,
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16))
def test_channels_first_matches_convnext(c, hw, eps, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    mod = _randomize(ConvNextLayerNorm(c, eps=eps, data_format="channels_first"), gen).to(dtype)
    x = (torch.randn((2, c) + hw, generator=gen) * 3 + 1).to(dtype)
    with torch.no_grad():
        theirs = mod(x)
        _close(R.layer_norm_channels_first(x, mod.weight, mod.bias, eps), theirs, dtype)
        spec = R.NormSpec(R.LAYER_NORM_CHANNELS_FIRST, has_bias=True)
        _close(aten_norm(spec, x, mod.weight, mod.bias, eps), theirs, dtype)


class _EpsilonNorm(nn.Module):
    """A norm that calls its eps ``epsilon`` (as some TF ports do)."""

    def __init__(self, h, epsilon=1e-3):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))
        self.bias = nn.Parameter(torch.zeros(h))
        self.epsilon = epsilon

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        var = x.var(-1, unbiased=False, keepdim=True)
        return self.weight * (x - mu) / torch.sqrt(var + self.epsilon) + self.bias


@pytest.mark.parametrize(
    "module,variant,eps_attr",
    [
        (nn.LayerNorm(16), R.LAYER_NORM, "eps"),
        (nn.LayerNorm(16, bias=False), R.LAYER_NORM, "eps"),
        (nn.LayerNorm(16, elementwise_affine=False), R.LAYER_NORM, "eps"),
        (LlamaRMSNorm(16), R.RMS_NORM_LLAMA, "variance_epsilon"),
        (T5LayerNorm(16), R.RMS_NORM_T5, "variance_epsilon"),
        (GemmaRMSNorm(16), R.RMS_NORM_GEMMA, "eps"),
        (nn.RMSNorm(16), R.RMS_NORM_TORCH, "eps"),
        (ConvNextLayerNorm(16, data_format="channels_first"), R.LAYER_NORM_CHANNELS_FIRST, "eps"),
        (_EpsilonNorm(16), R.LAYER_NORM, "epsilon"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v),
)
def test_classify_picks_the_variant(module, variant, eps_attr):
    spec, reason, err32, _ = classify(module)
    assert spec is not None, reason
    assert spec.variant == variant and spec.eps_attr == eps_attr
    assert err32 <= 1e-5


def test_classify_rejects_a_wrong_eps():
    class HardcodedEps(_EpsilonNorm):
        def forward(self, x):  # ignores self.epsilon: the probe must notice
            mu = x.mean(-1, keepdim=True)
            var = x.var(-1, unbiased=False, keepdim=True)
            return self.weight * (x - mu) / torch.sqrt(var + 1e-12) + self.bias

    spec, reason, _, _ = classify(HardcodedEps(16, epsilon=1e-3))
    assert spec is None and "no reference variant" in reason


def test_unknown_variant_and_convention_are_rejected():
    with pytest.raises(ValueError, match="unknown norm variant 'batch'"):
        R.NormSpec("batch")
    with pytest.raises(ValueError, match="unknown RMSNorm variant 'layer_norm'; accepted: rms_norm_llama, rms_norm_gemma"):
        R.rms_norm(torch.randn(2, 4), None, 1e-6, variant="layer_norm")
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="accepted: llama, gemma, t5, torch"):
        R.rms_norm(torch.randn(2, 4), None, 1e-6, convention="mistral")


@pytest.mark.parametrize("variant", R.RMS_VARIANTS)
def test_deprecated_convention_names_warn_and_compute_the_same(variant):
    short = variant[len("rms_norm_"):]
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 8, generator=gen).half(), torch.randn(8, generator=gen).half()
    want = R.rms_norm(x, w, 1e-6, variant=variant)
    with pytest.warns(DeprecationWarning, match="convention=.... is deprecated"):
        by_keyword = R.rms_norm(x, w, 1e-6, convention=short)
    with pytest.warns(DeprecationWarning, match=f"variant '{short}' is deprecated: use '{variant}'"):
        by_position = R.rms_norm(x, w, 1e-6, short)
    assert torch.equal(by_keyword, want) and torch.equal(by_position, want)
    with pytest.warns(DeprecationWarning, match="rms_convention is deprecated"):
        assert R.NormSpec(variant).rms_convention == short
