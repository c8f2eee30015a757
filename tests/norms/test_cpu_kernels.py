"""The C++ CPU kernels of ``hf_lnorm.norms.cpu`` (float32 residual add + LayerNorm / RMSNorm).

Precision against torch (output and every gradient within 2x of torch's own
error, against a float64 truth) through the ``norm_fwd`` op with
``impl="cpp"``; the streaming-store path on an output above its threshold;
the output-block cache (recycling, no aliasing of live tensors, limits);
which path the public functions take; and the errors.
"""

import shutil
import os

import pytest
import torch
import torch.nn.functional as F

from hf_lnorm.norms import cpu, ops

from ._precision import check_precision


@pytest.fixture(scope="module", autouse=True)
def kernels():
    """The kernels must build wherever a compiler is present; without one the module is skipped, saying why."""
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        pytest.skip(f"no C++ compiler ({cxx}) on PATH: the CPU kernels cannot be built here")
    why = cpu.unavailable_reason()
    assert why is None, f"the CPU kernels did not build: {why}"


@pytest.mark.parametrize("kind", ops.CPP_KINDS)
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_within_2x_of_torch_every_hidden_size_and_affine(kind, residual):
    for hidden in (1, 7, 16, 1023, 4097):
        check_precision(kind, torch.float32, hidden, True, kind == "layer_norm", residual, "cpp")
    check_precision(kind, torch.float32, 7, False, False, residual, "cpp")
    if kind == "layer_norm":
        check_precision(kind, torch.float32, 1023, True, False, residual, "cpp")
        check_precision(kind, torch.float32, 1023, False, True, residual, "cpp")


def test_streaming_path_large_output_matches_torch():
    # 2048 x 1536 float32 = 12 MiB per output: above the 8 MiB streaming threshold, rows a multiple of 16
    x, r = torch.randn(2048, 1536), torch.randn(2048, 1536)
    w, b = torch.rand(1536) + 0.5, torch.randn(1536)
    y, s, mean, rstd = cpu.add_norm(x, r, w, b, 1e-5)
    assert torch.equal(s, x + r)
    torch.testing.assert_close(y, F.layer_norm(x + r, (1536,), w, b, 1e-5), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(mean, (x + r).mean(-1))
    y_rms, s_rms, empty, rstd_rms = cpu.add_norm(x, r, w, None, 1e-6, rms=True)
    assert empty.numel() == 0 and torch.equal(s_rms, x + r)
    torch.testing.assert_close(y_rms, F.rms_norm(x + r, (1536,), w, 1e-6), atol=2e-6, rtol=1e-5)


def test_rows_are_independent_of_the_thread_count():
    x, r, w, b = torch.randn(257, 200), torch.randn(257, 200), torch.randn(200), torch.randn(200)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = cpu.add_norm(x, r, w, b, 1e-5)
        torch.set_num_threads(max(2, before))
        many = cpu.add_norm(x, r, w, b, 1e-5)
    finally:
        torch.set_num_threads(before)
    for a, c in zip(one, many):
        assert torch.equal(a, c)


def test_in_place_writes_the_sum_into_the_residual():
    x, r = torch.randn(3, 5, 40), torch.randn(3, 5, 40)
    want = x + r
    y, s, _, _ = cpu.add_norm(x, r, None, None, 1e-5, in_place=True)
    assert s.data_ptr() == r.data_ptr() and torch.equal(r, want)
    torch.testing.assert_close(y, F.layer_norm(want, (40,), eps=1e-5))


def test_recycled_blocks_never_alias_live_outputs():
    x, r = torch.randn(64, 96), torch.randn(64, 96)
    first = cpu.add_norm(x, r, None, None, 1e-5)
    kept = [t.clone() for t in first[:2]]
    second = cpu.add_norm(x * 2, r, None, None, 1e-5)
    ptrs = {first[0].data_ptr(), first[1].data_ptr(), second[0].data_ptr(), second[1].data_ptr()}
    assert len(ptrs) == 4
    assert torch.equal(first[0], kept[0]) and torch.equal(first[1], kept[1])
    del first, second
    info = cpu.cache_info()
    assert info["idle_bytes"] >= 4 * 64 * 96 * 4
    third = cpu.add_norm(x, r, None, None, 1e-5)
    assert cpu.cache_info()["hits"] >= info["hits"] + 2
    assert torch.equal(third[0], kept[0]) and torch.equal(third[1], kept[1])


def test_cache_limit_and_empty_cache():
    old = cpu.set_cache_limit(0)
    try:
        y = cpu.add_norm(torch.randn(8, 16), None, None, None, 1e-5)[0]
        del y
        assert cpu.cache_info()["idle_bytes"] == 0  # freed at once, nothing kept
        cpu.set_cache_limit(1 << 20)
        y = cpu.add_norm(torch.randn(8, 16), None, None, None, 1e-5)[0]
        del y
        assert cpu.cache_info()["idle_bytes"] > 0
        assert cpu.empty_cache() > 0 and cpu.cache_info()["idle_bytes"] == 0
    finally:
        cpu.set_cache_limit(old)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="limit_bytes"):
            cpu.set_cache_limit(bad)


def test_public_functions_take_the_kernels_only_in_float32_inference():
    x, r, w, b = torch.randn(4, 32), torch.randn(4, 32), torch.rand(32), torch.randn(32)
    misses = lambda: cpu.cache_info()["hits"] + cpu.cache_info()["misses"]  # noqa: E731
    n0 = misses()
    with torch.no_grad():
        y, s = ops.add_layer_norm(x, r, w, b, 1e-5)
        ops.add_rms_norm(x, r, w, 1e-6)
        ops.layer_norm(x, w, b, 1e-5)
        ops.rms_norm(x, w, 1e-6)
    assert misses() == n0 + 6  # two outputs for each add+norm, one for each norm
    y_op, s_op, _, _ = ops.norm_fwd(x, r, w, b, 1e-5, "layer_norm", "cpp")
    assert torch.equal(y, y_op) and torch.equal(s, s_op)
    n1 = misses()
    ops.add_layer_norm(x.double(), r.double(), w.double(), b.double(), 1e-5)
    ops.add_layer_norm(x.bfloat16(), r.bfloat16(), None, None, 1e-5)
    xg = x.clone().requires_grad_()
    yg, _ = ops.add_layer_norm(xg, r, w, b, 1e-5)  # autograd recording: the aten path
    assert misses() == n1
    yg.sum().backward()
    assert xg.grad is not None


def test_bad_inputs_are_named():
    with pytest.raises(RuntimeError, match="float32"):
        cpu.add_norm(torch.randn(2, 4).double(), None, None, None, 1e-5)
    with pytest.raises(RuntimeError, match="weight has 3 elements, expected 4"):
        cpu.add_norm(torch.randn(2, 4), None, torch.ones(3), None, 1e-5)
    with pytest.raises(RuntimeError, match="in_place needs a residual"):
        cpu.add_norm(torch.randn(2, 4), None, None, None, 1e-5, in_place=True)
    with pytest.raises(ValueError, match="impl='cpp' runs float32"):
        ops.norm_fwd(torch.randn(2, 4).bfloat16(), None, None, None, 1e-5, "layer_norm", "cpp")
    with pytest.raises(ValueError, match="impl='cpp' runs float32 .* kind 'rms_gemma'"):
        ops.norm_fwd(torch.randn(2, 4), None, None, None, 1e-5, "rms_gemma", "cpp")


def test_disabled_kernels_fall_back_and_forcing_them_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_LNORM_CPU_KERNELS", "0")
    assert cpu.unavailable_reason() == "disabled by HF_LNORM_CPU_KERNELS=0"
    x, r = torch.randn(2, 8), torch.randn(2, 8)
    y, s = ops.add_layer_norm(x, r, None, None, 1e-5)  # silently the aten path
    assert torch.equal(y, F.layer_norm(x + r, (8,), eps=1e-5))
    with pytest.raises(RuntimeError, match="impl='cpp' was forced .* HF_LNORM_CPU_KERNELS=0"):
        ops.norm_fwd(x, r, None, None, 1e-5, "layer_norm", "cpp")


def test_empty_batch():
    y, s, mean, rstd = cpu.add_norm(torch.randn(0, 8), torch.randn(0, 8), torch.ones(8), None, 1e-5)
    assert y.shape == (0, 8) and s.shape == (0, 8) and mean.shape == (0,) and rstd.shape == (0,)
