"""The per-call fast path of patched norms (``hf_lnorm.norms.fastpath``): same numbers as the general path,
taken only in plain eager calls, and the size below which aten's kernel runs instead of the C++ one."""

import copy

import pytest
import torch
from torch import nn

import hf_lnorm
from hf_lnorm import patching
from hf_lnorm.norms import fastpath
from hf_lnorm.patching import STATE_ATTR, FusedMode

from ..backend_check import CPP_EVENT, expected_cpu_backend, norm_calls


class T5Norm(nn.Module):
    """T5's RMSNorm (no mean subtraction, fp32 variance, cast to the weight's half dtype)."""

    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n))
        self.variance_epsilon = 1e-6

    def forward(self, x):
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.variance_epsilon)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


class LlamaNorm(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n))
        self.variance_epsilon = 1e-6

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


def _layer_norm(n):
    norm = nn.LayerNorm(n)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return norm


def _rms_norm(n):
    norm = nn.RMSNorm(n, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    return norm


NORMS = {"layer_norm": _layer_norm, "rms_norm_llama": LlamaNorm, "rms_norm_t5": T5Norm, "rms_norm_torch": _rms_norm}


def _patched(kind, n=64, backend="auto"):
    stock = NORMS[kind](n)
    model = hf_lnorm.patch(nn.Sequential(copy.deepcopy(stock)), backend=backend)
    norm = model[0]
    state = norm.__dict__[STATE_ATTR]
    assert state.spec.variant == kind
    return stock, norm, state


@pytest.fixture
def general_calls(monkeypatch):
    """How many calls reached the fused mode's general forward."""
    calls = []
    original = FusedMode.forward

    def counting(self, module, x):
        calls.append(x.shape)
        return original(self, module, x)

    monkeypatch.setattr(FusedMode, "forward", counting)
    return calls


@pytest.mark.parametrize("kind", sorted(NORMS))
@pytest.mark.parametrize("backend", ["auto", "aten"])
def test_fast_path_equals_the_stock_module_and_skips_the_general_forward(kind, backend, general_calls):
    stock, norm, state = _patched(kind, backend=backend)
    assert state.fast is not None and state.fast.size == 64
    x = torch.randn(4, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(norm(x), stock(x), rtol=1e-5, atol=1e-5)
    y = norm(x.requires_grad_())  # gradients recorded: aten's kernel on the fast path too
    y.sum().backward()
    x2 = x.detach().clone().requires_grad_()
    stock(x2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)
    assert general_calls == [], "a plain float32 eager call went through the general forward"


@pytest.mark.parametrize("kind", ["rms_norm_llama", "rms_norm_t5"])
def test_half_precision_takes_the_general_path_with_its_casting_rules(kind, general_calls):
    stock, norm, _ = _patched(kind)
    stock, norm = stock.to(torch.bfloat16), norm.to(torch.bfloat16)
    x = torch.randn(4, 8, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        torch.testing.assert_close(norm(x), stock(x))
    assert len(general_calls) == 1


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm_llama"])
def test_under_compile_the_norm_steps_aside_for_the_stock_forward(kind, general_calls, monkeypatch):
    stock, norm, _ = _patched(kind)
    ran = []
    original = type(stock).forward
    monkeypatch.setattr(type(stock), "forward", lambda self, x: ran.append(1) or original(self, x))
    x = torch.randn(2, 8, 64)
    torch._dynamo.reset()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append([str(n.target) for n in gm.graph.nodes if n.op == "call_function"])
        return gm.forward

    compiled = torch.compile(norm, backend=backend, fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(x), stock(x))
    assert general_calls == [] and ran, "the compiled patched norm did not trace the module's own forward"
    assert len(graphs) == 1 and not any("hf_lnorm" in t for t in graphs[0]), graphs


def test_traces_take_the_general_path(general_calls):
    stock, norm, _ = _patched("layer_norm")
    x = torch.randn(2, 8, 64)
    traced = torch.jit.trace(norm, (x,), check_trace=False)
    assert general_calls, "torch.jit.trace recorded the eager fast path"
    torch.testing.assert_close(traced(x), stock(x), rtol=1e-5, atol=1e-5)


def test_an_input_of_the_wrong_width_fails_as_the_stock_module_does():
    stock, norm, _ = _patched("layer_norm")
    x = torch.randn(2, 32)
    with torch.no_grad():
        with pytest.raises(RuntimeError) as theirs:
            stock(x)
        with pytest.raises(RuntimeError) as ours:
            norm(x)
    assert "normalized_shape" in str(theirs.value) and "normalized_shape" in str(ours.value)


def test_small_inputs_take_atens_kernel_and_large_ones_the_cpp_kernel(monkeypatch):
    if expected_cpu_backend() != "cpp":
        pytest.skip("HF_LNORM_CPU_KERNELS=0: the aten path is tested everywhere else")
    monkeypatch.setattr(fastpath, "CPP_MIN_NUMEL", 4096)  # the default; the test session sets 0
    stock, norm, _ = _patched("layer_norm", n=384)
    with torch.no_grad():
        small = torch.randn(1, 8, 384)  # 3,072 elements
        large = torch.randn(1, 16, 384)  # 6,144 elements
        y, counts = norm_calls(lambda: norm(small))
        assert counts.get(CPP_EVENT, 0) == 0 and counts.get("aten::layer_norm", 0) == 1, dict(counts)
        torch.testing.assert_close(y, stock(small))
        y, counts = norm_calls(lambda: norm(large))
        assert counts.get(CPP_EVENT, 0) == 1, dict(counts)
        torch.testing.assert_close(y, stock(large), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_a_bad_size_threshold_is_an_error_naming_the_value(monkeypatch, value):
    monkeypatch.setenv("HF_LNORM_CPU_MIN_NUMEL", value)
    with pytest.raises(ValueError, match=f"HF_LNORM_CPU_MIN_NUMEL='{value}'.*whole number"):
        fastpath._min_numel()
    monkeypatch.setenv("HF_LNORM_CPU_MIN_NUMEL", "")
    assert fastpath._min_numel() == 4096


def test_no_plan_where_the_general_path_knows_more():
    model = hf_lnorm.patch(nn.Sequential(nn.RMSNorm(16)))  # eps=None: the dtype's epsilon
    state = model[0].__dict__[STATE_ATTR]
    assert state.spec.variant == "rms_norm_torch" and state.fast is None
    x = torch.randn(3, 16)
    torch.testing.assert_close(model[0](x), nn.functional.rms_norm(x, (16,), model[0].weight))


def test_deepcopy_keeps_the_plan_on_the_copy():
    _, norm, _ = _patched("layer_norm")
    clone = copy.deepcopy(norm)
    with torch.no_grad():
        clone.weight.mul_(2)
        x = torch.randn(2, 64)
        assert not torch.allclose(clone(x), norm(x))
    assert clone.__dict__[STATE_ATTR].fast == norm.__dict__[STATE_ATTR].fast
    assert patching.is_patched(clone)
