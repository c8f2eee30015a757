"""The C++ CPU kernels of ``hf_lnorm.norms.cpu`` (float32 residual add + LayerNorm / RMSNorm).

Precision against torch (output and every gradient within 2x of torch's own
error, against a float64 truth) through the ``norm_fwd`` op with
``impl="cpp"``; the streaming-store path on an output above its threshold;
the output-block cache (recycling, no aliasing of live tensors, limits);
which path the public functions take; and the errors. Then the build: its
key, its folder under ``HF_LNORM_CACHE`` (one extra compile, in a subprocess),
``hf-lnorm build-kernels``, the default cache limit, and unpatch freeing it.
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from hf_lnorm.cli import main
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


@pytest.mark.parametrize("variant", ops.CPP_VARIANTS)
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_within_2x_of_torch_every_hidden_size_and_affine(variant, residual):
    for hidden in (1, 7, 16, 1023, 4097):
        check_precision(variant, torch.float32, hidden, True, variant == "layer_norm", residual, "cpp")
    check_precision(variant, torch.float32, 7, False, False, residual, "cpp")
    if variant == "layer_norm":
        check_precision(variant, torch.float32, 1023, True, False, residual, "cpp")
        check_precision(variant, torch.float32, 1023, False, True, residual, "cpp")


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


@pytest.fixture
def cache_on():
    """The output-block cache enabled (64 MiB) for one test, whatever the default; the old limit restored."""
    old = cpu.set_cache_limit(64 << 20)
    yield
    cpu.set_cache_limit(old)


def test_recycled_blocks_never_alias_live_outputs(cache_on):
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


def test_a_freed_block_evicts_idle_blocks_of_other_sizes():
    old = cpu.set_cache_limit(1 << 20)
    try:
        cpu.empty_cache()
        cpu.add_norm(torch.randn(150, 1024), None, None, None, 1e-5)  # 600 KiB idle
        assert cpu.cache_info()["idle_bytes"] == 150 * 4096
        cpu.add_norm(torch.randn(160, 1024), None, None, None, 1e-5)  # 640 KiB: only fits without the 600
        assert cpu.cache_info()["idle_bytes"] == 160 * 4096
        hits = cpu.cache_info()["hits"]
        cpu.add_norm(torch.randn(160, 1024), None, None, None, 1e-5)
        assert cpu.cache_info()["hits"] == hits + 1
        cpu.add_norm(torch.randn(300, 1024), None, None, None, 1e-5)  # above the limit: freed, nothing evicted
        assert cpu.cache_info()["idle_bytes"] == 160 * 4096
    finally:
        cpu.set_cache_limit(old)
        cpu.empty_cache()


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
    with pytest.raises(ValueError, match="impl='cpp' runs float32 .* variant 'rms_norm_gemma'"):
        ops.norm_fwd(torch.randn(2, 4), None, None, None, 1e-5, "rms_norm_gemma", "cpp")


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


# --------------------------------------------------------------------------- build folder, key, CLI, cache policy

KEY_INPUTS = dict(cpu_flags="avx512 avx2 avx512f fma sse4_2", machine="x86_64", compiler="/usr/bin/g++-12",
                  compiler_version="c++ (Debian 12.2.0-14) 12.2.0", torch_version="2.13.0+cpu", python="cpython-311",
                  source_sha256="ab" * 32, cflags=("-O3", "-march=native"))


def test_build_key_changes_with_every_input_it_depends_on():
    key = cpu.build_key(**KEY_INPUTS)
    assert key == cpu.build_key(**KEY_INPUTS) and len(key) == 16 and int(key, 16) >= 0
    changed = {
        "cpu_flags": "avx512 avx2 avx512f avx512_vnni fma sse4_2",  # one more CPU flag
        "machine": "aarch64",
        "compiler": "/usr/bin/clang++-16",
        "compiler_version": "c++ (Debian 13.1.0-1) 13.1.0",
        "torch_version": "2.14.0+cpu",
        "python": "cpython-312",
        "source_sha256": "cd" * 32,
        "cflags": ("-O2", "-march=native"),
    }
    keys = {name: cpu.build_key(**{**KEY_INPUTS, name: value}) for name, value in changed.items()}
    assert key not in keys.values() and len(set(keys.values())) == len(keys), keys


def test_build_goes_under_hf_lnorm_cache_without_touching_path(tmp_path):
    """A fresh cache root compiles once (the INFO line names the folder), runs the op, leaves PATH as it was;
    ninja comes from the venv, not PATH. ``hf-lnorm build-kernels`` then finds the build and names its folder."""
    tools = tmp_path / "tools"  # the compiler toolchain without ninja, so the build must find the venv's ninja
    tools.mkdir()
    for name in ("c++", "g++", "gcc", "cc", "as", "ld"):
        found = shutil.which(name)
        if found:
            (tools / name).symlink_to(found)
    assert shutil.which("ninja", path=str(tools)) is None
    assert os.path.exists(os.path.join(os.path.dirname(sys.executable), "ninja")), "ninja missing from the venv"
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_LNORM_CPU_KERNELS", "HF_LNORM_CPU_CACHE_MB", "CXX")}
    env.update(PATH=str(tools), HF_LNORM_CACHE=str(cache))
    code = (
        "import logging, os, torch\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s %(levelname)s %(message)s')\n"
        "before = os.environ['PATH']\n"
        "from hf_lnorm.norms import cpu\n"
        "why = cpu.unavailable_reason()\n"
        "assert why is None, why\n"
        "assert os.environ['PATH'] == before, os.environ['PATH']\n"
        "x = torch.randn(3, 8)\n"
        "y = torch.ops.hf_lnorm_cpu.add_norm(x, None, None, None, 1e-5, False, False)[0]\n"
        "torch.testing.assert_close(y, torch.nn.functional.layer_norm(x, (8,)))\n"
        "print('built', cpu.last_build()['directory'], cpu.last_build()['compiled'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    folders = list((cache / "kernels").glob("cpu-*"))
    assert len(folders) == 1 and (folders[0] / "hf_lnorm_cpu.so").is_file(), folders
    assert f"built {folders[0]} True" in res.stdout
    compiling = [line for line in res.stderr.splitlines() if "compiling the CPU norm kernels" in line]
    assert len(compiling) == 1 and compiling[0].startswith("hf_lnorm INFO") and str(folders[0]) in compiling[0]
    res = subprocess.run([sys.executable, "-m", "hf_lnorm.cli", "build-kernels"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"already built in {folders[0]}" in res.stdout
    assert "compiling" not in res.stderr  # loaded, not rebuilt
    assert len(list((cache / "kernels").glob("cpu-*"))) == 1


def test_build_kernels_command_names_the_folder(capsys):
    assert main(["build-kernels"]) == 0
    out = capsys.readouterr().out
    assert str(cpu.build_directory()) in out and cpu.build_directory().name.startswith("cpu-")


def test_build_kernels_command_fails_with_the_reason(monkeypatch, capsys):
    monkeypatch.setattr(cpu, "_state", {})  # a process that has not loaded the kernels yet
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    assert main(["build-kernels"]) == 1
    err = capsys.readouterr().err
    assert "cannot be built here" in err and "no-such-compiler-xyz" in err


def test_default_cache_policy_and_its_environment_override(monkeypatch):
    """Loading the kernels sets the limit from HF_LNORM_CPU_CACHE_MB, else the default: a 64 MiB bound."""
    old = cpu.cache_info()["limit_bytes"]
    monkeypatch.delenv("HF_LNORM_CPU_CACHE_MB", raising=False)
    monkeypatch.setattr(cpu, "_state", {})  # load again, as a fresh process does
    try:
        assert cpu.is_available() and cpu.DEFAULT_CACHE_MB == 64
        assert cpu.cache_info()["limit_bytes"] == 64 << 20
        monkeypatch.setattr(cpu, "_state", {})
        monkeypatch.setenv("HF_LNORM_CPU_CACHE_MB", "3")
        assert cpu.is_available() and cpu.cache_info()["limit_bytes"] == 3 << 20
    finally:
        cpu.set_cache_limit(old)


def test_bad_cache_environment_is_named(monkeypatch):
    monkeypatch.setattr(cpu, "_state", {})
    for bad in ("lots", "-5"):
        monkeypatch.setenv("HF_LNORM_CPU_CACHE_MB", bad)
        with pytest.raises(ValueError, match=f"HF_LNORM_CPU_CACHE_MB='{bad}' is not accepted"):
            cpu.is_available()


def test_unpatch_frees_the_idle_blocks(cache_on):
    from transformers import BertConfig, BertModel

    import hf_lnorm

    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        vocab_size=50, max_position_embeddings=32)
    model = hf_lnorm.patch(BertModel(config).eval())
    with torch.inference_mode():
        model(input_ids=torch.randint(0, 50, (2, 16)))
    assert cpu.cache_info()["idle_bytes"] > 0
    hf_lnorm.unpatch(model)
    assert cpu.cache_info()["idle_bytes"] == 0


def test_checking_availability_leaves_path_alone():
    before = os.environ.get("PATH")
    assert cpu.is_available()
    assert os.environ.get("PATH") == before
