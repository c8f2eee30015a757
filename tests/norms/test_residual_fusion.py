"""Residual add+LayerNorm fusion of post-LN blocks (``hf_lnorm.norms.residual``) through ``patch``."""

import copy

import pytest
import torch
from torch import nn

import hf_lnorm
from hf_lnorm.norms.residual import RESIDUAL_ATTR, find_post_ln_blocks, fused_block_names

from ..conftest import minilm_path


class PostLN(nn.Module):
    """BERT SelfOutput shape: LayerNorm(dropout(dense(h)) + residual)."""

    def __init__(self, n_in=12, n=8):
        super().__init__()
        self.dense = nn.Linear(n_in, n)
        self.LayerNorm = nn.LayerNorm(n, eps=1e-12)
        self.dropout = nn.Dropout(0.1)

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class LookAlike(PostLN):
    """Same children, different math: the probe must reject it."""

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dense(hidden_states)) + input_tensor


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = PostLN()
        self.b = LookAlike()

    def forward(self, h, r):
        return self.a(h, r) + self.b(h, r)


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, {n: dict(m.__dict__) for n, m in model.named_modules()}


def test_fuses_real_blocks_rejects_lookalikes_and_unpatch_restores():
    net = Net().eval()
    h, r = torch.randn(2, 3, 12), torch.randn(2, 3, 8)
    want = net(h, r)
    state0 = _snapshot(net)
    hf_lnorm.patch(net)
    assert fused_block_names(net) == ["a"]
    fusion = {rec.name: rec.extra.get("residual_fusion") for rec in hf_lnorm.patch_report(net)}
    assert fusion["a.LayerNorm"]["status"] == "fused"
    assert fusion["b.LayerNorm"]["status"] == "rejected" and "probe error" in fusion["b.LayerNorm"]["reason"]
    torch.testing.assert_close(net(h, r), want, atol=1e-6, rtol=1e-6)
    hf_lnorm.patch(net)  # patching twice is a no-op
    assert fused_block_names(net) == ["a"]
    hf_lnorm.unpatch(net)
    assert fused_block_names(net) == []
    sd, dicts = _snapshot(net)
    assert all(torch.equal(sd[k], v) for k, v in state0[0].items())
    for name, module in net.named_modules():
        assert module.__dict__.keys() == state0[1][name].keys(), name
        assert "forward" not in module.__dict__ and RESIDUAL_ATTR not in module.__dict__


def test_fuse_residual_can_be_turned_off_and_bad_options_are_named():
    net = Net()
    hf_lnorm.patch(net, fuse_residual=False)
    assert fused_block_names(net) == []
    hf_lnorm.unpatch(net)
    with pytest.raises(TypeError, match="bogus"):
        hf_lnorm.patch(Net(), bogus=1)


def test_training_gradients_match_unfused():
    torch.manual_seed(0)
    net = PostLN()
    twin = copy.deepcopy(net)
    hf_lnorm.patch(net)
    assert fused_block_names(net) == [""]
    net.eval(), twin.eval()  # dropout off so the two runs are comparable
    h = torch.randn(4, 5, 12, requires_grad=True)
    r = torch.randn(4, 5, 8, requires_grad=True)
    h2, r2 = h.detach().clone().requires_grad_(), r.detach().clone().requires_grad_()
    g = torch.randn(4, 5, 8)
    (net(h, r) * g).sum().backward()
    (twin(h2, r2) * g).sum().backward()
    torch.testing.assert_close(h.grad, h2.grad)
    torch.testing.assert_close(r.grad, r2.grad)
    for p, q in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_inference_does_not_touch_the_residual_input():
    net = hf_lnorm.patch(PostLN().eval())
    h, r = torch.randn(2, 3, 12), torch.randn(2, 3, 8)
    r0 = r.clone()
    with torch.no_grad():
        net(h, r)
    assert torch.equal(r, r0)


def test_structure_filters_out_other_blocks():
    class Pre(nn.Module):  # one tensor in: not a residual block
        def __init__(self):
            super().__init__()
            self.dense, self.LayerNorm = nn.Linear(8, 8), nn.LayerNorm(8)

        def forward(self, x):
            return self.LayerNorm(self.dense(x))

    class Extra(PostLN):  # an extra child: the block does more than add+norm
        def __init__(self):
            super().__init__()
            self.act = nn.GELU()

    model = nn.ModuleDict({"pre": Pre(), "extra": Extra()})
    hf_lnorm.patch(model)
    assert find_post_ln_blocks(model) == [] and fused_block_names(model) == []


def test_minilm_blocks_fused_and_logits_equal():
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(minilm_path()).eval()
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path())
    enc = tok(["Who wrote it?", "When?"], ["It was written by John in 1850.", "In 1850, by John."], padding=True, return_tensors="pt")
    state0 = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        want = model(**enc, output_hidden_states=True)
    hf_lnorm.patch(model)
    report = hf_lnorm.patch_report(model)
    fused = [r.extra["residual_fusion"]["block"] for r in report if r.extra.get("residual_fusion", {}).get("status") == "fused"]
    n_layers = model.config.num_hidden_layers
    assert len(fused) == 2 * n_layers and len(fused_block_names(model)) == 2 * n_layers
    assert "bert.encoder.layer.0.attention.output" in fused and "bert.encoder.layer.0.output" in fused
    with torch.no_grad():
        got = model(**enc, output_hidden_states=True)
    # equal up to float rounding: the fused kernel adds and reduces in its own order (on AVX2-only CPUs a few
    # hidden-state elements differ by ~2e-5 relative after six blocks)
    for a, b in [(got.start_logits, want.start_logits), (got.end_logits, want.end_logits)] + list(zip(got.hidden_states, want.hidden_states)):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=5e-5)
    hf_lnorm.unpatch(model)
    assert fused_block_names(model) == []
    assert all(torch.equal(state0[k], v) for k, v in model.state_dict().items())
