"""patch(model, mode="quantized") on tiny random models of many transformers architectures.

For each architecture: the tracing pass finds the Linear readers of the norms
(by tensor identity), the quantized model's output has cosine similarity >= 0.99
with fp32 on random inputs, the state_dict stays byte-identical while patched,
and unpatch restores outputs, forwards and state exactly.
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

import hf_lnorm
from hf_lnorm.inputs import dummy_inputs
from hf_lnorm.quantization import LINEAR_ATTR, int8_layers

from ..patching.archs import ARCHS, tiny_config

def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    for v in (out.values() if hasattr(out, "values") else out):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v
    raise AssertionError("model returned no float tensor")


def _state_bytes(model):
    return {k: v.detach().contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b""
            for k, v in model.state_dict().items()}


def _forwards(model):
    return {n: (type(m), m.__dict__.get("forward")) for n, m in model.named_modules()}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_quantized_patch_cosine_and_exact_unpatch(arch):
    torch.manual_seed(0)
    model = AutoModel.from_config(tiny_config(arch), attn_implementation="eager").eval()
    inputs = dummy_inputs(model, batch_size=2, seq_len=24, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = _first_tensor(model(**inputs)).clone()
    before_state, before_fwd = _state_bytes(model), _forwards(model)

    hf_lnorm.patch(model, mode="quantized")
    report = hf_lnorm.patch_report(model)
    assert report.patched, report.table()
    for rec in report.patched:
        assert rec.mode == "quantized"
        assert rec.extra["int8"] in ("gemm", "qdq"), rec
        assert (rec.extra["int8"] == "gemm") == bool(rec.extra["consumers"]), rec
    layers = int8_layers(model)
    assert layers, f"{arch}: no int8 Linear found\n{report.table()}"
    assert _state_bytes(model) == before_state  # int8 copies are not parameters or buffers

    with torch.no_grad():
        out = _first_tensor(model(**inputs))
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert not torch.equal(out, ref), f"{arch}: quantized output identical to fp32 - nothing was quantized"
    cos = F.cosine_similarity(out.flatten().double(), ref.flatten().double(), dim=0).item()
    assert cos >= 0.99, f"{arch}: cosine {cos:.4f}"

    hf_lnorm.unpatch(model)
    assert not any(LINEAR_ATTR in m.__dict__ for m in model.modules())
    assert _forwards(model) == before_fwd
    assert _state_bytes(model) == before_state
    with torch.no_grad():
        again = _first_tensor(model(**inputs))
    assert torch.equal(again, ref)
