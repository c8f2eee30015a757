"""hf_lnorm as a ``kernels`` provider: ``kernel_mapping``, the local repository, ``kernelize`` / ``unkernelize``.

Tiny transformers models built from configs (no download; the Hub is offline):
a Llama, whose ``LlamaRMSNorm`` is decorated with ``use_kernel_forward_from_hub("RMSNorm")``,
and a BERT, whose ``nn.LayerNorm`` is not decorated. Each path is checked three ways:
outputs (and gradients) equal the stock model's within fp32 rounding, the report names
the kernel, and hf_lnorm's layer forward is counted running, so a test cannot pass on the
stock path.
"""

from __future__ import annotations

import ast
import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

kernels = pytest.importorskip("kernels", reason="hf_lnorm's kernel layers need the kernels library "
                                                "(pip install 'hf-lnorm[kernels]')")

import transformers  # noqa: E402
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM  # noqa: E402

import hf_lnorm  # noqa: E402
from hf_lnorm import hub_kernels  # noqa: E402
from hf_lnorm.hub_kernels import layers  # noqa: E402

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_LNORM_CACHE", str(tmp_path_factory.getbasetemp() / "hf_lnorm_cache"))


@pytest.fixture
def calls(monkeypatch):
    """Counts the layer forwards' calls of ``fused_norm``, by variant."""
    seen = []
    real = layers.fused_norm

    def counting(spec, *args, **kwargs):
        seen.append(spec.variant)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(layers, "fused_norm", counting)
    return seen


def tiny_llama() -> LlamaForCausalLM:
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, vocab_size=97, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial gains, so a norm that ignores its weight shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def tiny_bert() -> BertModel:
    cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     vocab_size=97, max_position_embeddings=64)
    return BertModel(cfg).eval()


def ids():
    return torch.randint(0, 97, (2, 9))


def rms_norms(model):
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ == "LlamaRMSNorm"]


# --------------------------------------------------------------------------- hf_lnorm.kernelize


def test_llama_runs_hf_lnorm_layer_and_equals_stock_and_patch(calls):
    model, x = tiny_llama(), ids()
    stock = model(x).logits
    patched = hf_lnorm.patch(copy.deepcopy(model))(x).logits
    assert calls == []

    report = hf_lnorm.kernelize(model, mode="inference", device="cpu")

    norms = rms_norms(model)
    assert len(norms) == 5
    assert [(r.name, r.route, r.kernel, r.variant) for r in report] == [
        (n, "kernels", "hf_lnorm/RMSNorm", "rms_norm_llama") for n, _ in norms]
    assert all(r.backend in hf_lnorm.norms.available_backends() for r in report)
    assert report.summary() == "hf_lnorm.kernelize: 5 norm(s) on hf_lnorm kernel layers, 0 patched, 0 left as they are"
    for _, m in norms:
        assert m.forward.__func__ is layers.RMSNorm.forward and not hf_lnorm.is_patched(m)
    out = model(x).logits
    assert calls == ["rms_norm_llama"] * 5
    torch.testing.assert_close(out, stock, atol=ATOL, rtol=0)
    torch.testing.assert_close(out, patched, atol=ATOL, rtol=0)
    assert hub_kernels.kernelize_report(model) is report


def test_bert_layernorms_go_through_patch(calls):
    model, x = tiny_bert(), ids()
    stock = model(x).last_hidden_state
    patched = hf_lnorm.patch(copy.deepcopy(model))(x).last_hidden_state

    report = hf_lnorm.kernelize(model, device="cpu")

    lns = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)]
    assert len(lns) == 5
    assert [(r.name, r.route, r.kernel, r.variant) for r in report] == [
        (n, "patch", "hf_lnorm.patch/fused", "layer_norm") for n, _ in lns]
    assert all(hf_lnorm.is_patched(m) for _, m in lns)
    assert hf_lnorm.patch_report(model).patched  # patch's own report is there too
    out = model(x).last_hidden_state
    assert calls == []  # no decorated norm: the kernels route is not taken
    torch.testing.assert_close(out, stock, atol=ATOL, rtol=0)
    torch.testing.assert_close(out, patched, atol=ATOL, rtol=0)
    assert type(model.embeddings.LayerNorm).forward is nn.LayerNorm.forward  # no class was changed


def test_training_gradients_equal_stock(calls):
    model, x = tiny_llama().train(), ids()
    twin = copy.deepcopy(model)
    report = hf_lnorm.kernelize(model, mode="training", device="cpu")
    assert {r.route for r in report} == {"kernels"}

    for m in (model, twin):
        m(x, labels=x).loss.backward()
    assert calls  # the hf_lnorm layer ran in the training forward
    grads = dict(twin.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, atol=ATOL, rtol=1e-4, msg=name)


class DecoratedLayerNorm(nn.LayerNorm):
    """An ``nn.LayerNorm`` subclass decorated for the "LayerNorm" layer (``nn.LayerNorm`` itself stays untouched)."""


class GemmaStyleRMSNorm(nn.Module):
    """Decorated "RMSNorm" but with Gemma's ``(1 + weight)`` math: the RMSNorm layer must not take it."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(dim))
        self.eps = 1e-6

    def forward(self, x):
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


kernels.use_kernel_forward_from_hub("LayerNorm")(DecoratedLayerNorm)
kernels.use_kernel_forward_from_hub("RMSNorm")(GemmaStyleRMSNorm)


def test_decorated_layernorm_and_probe_rejection(calls):
    model = nn.Sequential(nn.Linear(24, 24), DecoratedLayerNorm(24), GemmaStyleRMSNorm(24), nn.LayerNorm(24))
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 5, 24)
    stock = model(x)

    report = hf_lnorm.kernelize(model, mode="inference")  # device from the parameters: cpu

    by_name = {r.name: r for r in report}
    assert (by_name["1"].route, by_name["1"].kernel) == ("kernels", "hf_lnorm/LayerNorm")
    assert (by_name["2"].route, by_name["2"].kernel, by_name["2"].variant) == ("patch", "hf_lnorm.patch/fused", "rms_norm_gemma")
    assert "computes rms_norm_gemma, not rms_norm_llama" in by_name["2"].reason
    assert (by_name["3"].route, by_name["3"].kernel) == ("patch", "hf_lnorm.patch/fused")
    assert not hasattr(nn.LayerNorm, "kernel_layer_name")
    out = model(x)
    assert calls == ["layer_norm"]
    torch.testing.assert_close(out, stock, atol=ATOL, rtol=0)


def test_unkernelize_restores_and_kernelize_twice_is_stable(calls):
    model, x = tiny_llama(), ids()
    bert = tiny_bert()
    stock = model(x).logits
    hf_lnorm.kernelize(model, device="cpu")
    report = hf_lnorm.kernelize(model, device="cpu")  # again: probes the original forward, same routes
    assert {r.route for r in report} == {"kernels"} and len(report) == 5
    hub_kernels.unkernelize(model)
    hf_lnorm.kernelize(bert, device="cpu")
    hub_kernels.unkernelize(bert)
    for m in list(model.modules()) + list(bert.modules()):
        assert "forward" not in m.__dict__ and not hf_lnorm.is_patched(m)
    assert len(hub_kernels.kernelize_report(model)) == 0
    calls.clear()
    torch.testing.assert_close(model(x).logits, stock, atol=0, rtol=0)
    assert calls == []


def test_compile_mode_fullgraph(calls):
    norm = rms_norms(tiny_llama())[0][1]
    x = torch.randn(2, 5, 64)
    stock = norm(x)
    report = hf_lnorm.kernelize(norm, mode="inference+compile", device="cpu")
    assert report[0].kernel == "hf_lnorm/RMSNorm"
    compiled = torch.compile(norm, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), stock, atol=ATOL, rtol=0)
    assert calls  # traced through the hf_lnorm layer


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "eval"}, "unknown mode 'eval'; accepted: inference, training, inference+compile, training+compile"),
    ({"mode": "inference", "device": "mps"}, "unknown device 'mps'; accepted: cpu, cuda"),
    ({"mode": "training", "device": torch.device("meta")}, "unknown device 'meta'; accepted: cpu, cuda"),
])
def test_bad_arguments_name_the_value(kwargs, message):
    model = nn.Sequential(nn.LayerNorm(8))
    with pytest.raises(ValueError) as info:
        hf_lnorm.kernelize(model, **kwargs)
    assert message in str(info.value)
    assert not hf_lnorm.is_patched(model[0])  # nothing was touched
    with pytest.raises(TypeError, match="expects a torch.nn.Module"):
        hf_lnorm.kernelize("model")


def test_kernel_mapping_arguments():
    with pytest.raises(ValueError, match="unknown device 'tpu'; accepted: cpu, cuda"):
        hf_lnorm.kernel_mapping(device="tpu")
    with pytest.raises(ValueError, match="unknown layer name 'GroupNorm'; accepted: RMSNorm, LayerNorm"):
        hf_lnorm.kernel_mapping(layers=["RMSNorm", "GroupNorm"])
    with pytest.raises(ValueError, match="unknown style 'json'; accepted: kernels, kernel_config"):
        hf_lnorm.kernel_mapping(style="json")


def test_without_kernels_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "kernels", None)  # makes `import kernels` fail
    with pytest.raises(ImportError, match=r"pip install 'hf-lnorm\[kernels\]'"):
        hf_lnorm.kernelize(nn.LayerNorm(4))
    with pytest.raises(ImportError, match=r"pip install 'hf-lnorm\[kernels\]'"):
        hf_lnorm.kernel_mapping()


def test_import_hf_lnorm_imports_no_kernels_code():
    # Parsed, not imported: every import of `kernels` in the package, and of hub_kernels outside its own
    # package, sits inside a function, so `import hf_lnorm` runs neither (transformers may import kernels
    # itself where it is installed).
    root = Path(hf_lnorm.__file__).parent
    module_level = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for n in ast.walk(f)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in in_function:
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.level and node.module is None:
                names = [a.name for a in node.names]
            if any(n == "kernels" or n.startswith("kernels.") for n in names) and not node.level:
                module_level.append(f"{path.relative_to(root)}:{node.lineno}")
            if "hub_kernels" in " ".join(names) and "hub_kernels" not in path.parts:
                module_level.append(f"{path.relative_to(root)}:{node.lineno}")
    assert module_level == []
    assert {"kernelize", "kernel_mapping"} <= set(hf_lnorm.__all__)
    assert hf_lnorm.kernelize is hub_kernels.kernelize and hf_lnorm.kernel_mapping is hub_kernels.kernel_mapping


# --------------------------------------------------------------------------- the kernels library's own path


def test_local_repo_layout_and_rewrite_protection():
    repo = hub_kernels.local_repo()
    variant = repo / "build" / "torch-universal"
    assert repo.is_relative_to(hf_lnorm.resources.cache_dir("hub_kernels"))
    meta = json.loads((variant / "metadata.json").read_text())
    assert meta["name"] == "hf-lnorm" and meta["python-depends"] == [] and set(meta["digest"]["files"]) == {"__init__.py"}
    assert hub_kernels.local_repo() == repo  # second call: same folder, not rewritten
    init = variant / "__init__.py"
    original = init.read_bytes()
    try:
        init.write_bytes(original + b"# edited\n")
        with pytest.raises(RuntimeError, match="missing or was changed"):
            hub_kernels.local_repo()
    finally:
        init.write_bytes(original)


def test_local_layer_repository_loads_hf_lnorm_layers():
    mapping = hf_lnorm.kernel_mapping(device="cpu")
    for name, cls in (("RMSNorm", layers.RMSNorm), ("LayerNorm", layers.LayerNorm)):
        repos = mapping[name]["cpu"]
        assert set(repos) == {kernels.Mode.INFERENCE, kernels.Mode.TRAINING,
                              kernels.Mode.INFERENCE | kernels.Mode.TORCH_COMPILE,
                              kernels.Mode.TRAINING | kernels.Mode.TORCH_COMPILE}
        repo = repos[kernels.Mode.INFERENCE]
        assert isinstance(repo, kernels.LocalLayerRepository)
        assert repo.load() is cls


def test_kernels_library_kernelize_reaches_hf_lnorm_layer(calls):
    model, x = tiny_llama(), ids()
    stock = model(x).logits
    with kernels.use_kernel_mapping(hf_lnorm.kernel_mapping(device="cpu")):
        kernels.kernelize(model, mode=kernels.Mode.INFERENCE, device="cpu")
    for _, m in rms_norms(model):
        assert m.forward.__func__ is layers.RMSNorm.forward
    out = model(x).logits
    assert calls == ["rms_norm_llama"] * 5
    torch.testing.assert_close(out, stock, atol=ATOL, rtol=0)
    hub_kernels.unkernelize(model)
    assert all("forward" not in m.__dict__ for _, m in rms_norms(model))


# --------------------------------------------------------------------------- transformers' KernelConfig


def _kernel_config_class():
    """transformers' ``KernelConfig``, or None where this transformers has none (4.57 has none; 5.x must)."""
    cls = getattr(transformers, "KernelConfig", None)
    if cls is None:
        major = int(transformers.__version__.split(".")[0])
        assert major < 5, f"transformers {transformers.__version__} has no KernelConfig"
    return cls


def test_kernel_config_use_local_kernel(calls, monkeypatch):
    KernelConfig = _kernel_config_class()
    if KernelConfig is None:
        pytest.skip(f"transformers {transformers.__version__} has no KernelConfig (it arrived in 5.x)")
    from transformers.integrations import hub_kernels as tf_hub_kernels
    from transformers.utils import kernel_config as tf_kernel_config

    model, x = tiny_llama(), ids()
    stock = model(x).logits

    # The string form: transformers validates it against the model and turns it into LocalLayerRepository
    # entries for the model's device. It accepts accelerator devices only, so the device is set to cuda here.
    config = KernelConfig(kernel_mapping=hf_lnorm.kernel_mapping(layers="RMSNorm", style="kernel_config"),
                          use_local_kernel=True)
    config.sanitize_kernel_mapping(model)
    monkeypatch.setattr(tf_kernel_config, "infer_device", lambda model: "cuda")
    config.create_compatible_mapping(model)
    (repo,) = config.kernel_mapping["RMSNorm"]["cuda"].values()
    assert isinstance(repo, kernels.LocalLayerRepository) and repo.load() is layers.RMSNorm

    # On CPU: transformers' kernelize with a KernelConfig holding hf_lnorm's mapping in the kernels form.
    cpu_config = KernelConfig(kernel_mapping=hf_lnorm.kernel_mapping(device="cpu", layers="RMSNorm"),
                              use_local_kernel=True)
    tf_hub_kernels.kernelize(model, mode=kernels.Mode.INFERENCE, kernel_config=cpu_config)
    for _, m in rms_norms(model):
        assert m.forward.__func__ is layers.RMSNorm.forward
    out = model(x).logits
    assert calls == ["rms_norm_llama"] * 5
    torch.testing.assert_close(out, stock, atol=ATOL, rtol=0)
    model.reset_kernels()  # transformers' own undo
    assert all(m.__dict__.get("forward") is None for _, m in rms_norms(model))
