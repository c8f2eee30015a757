"""hf_lnorm.patch under sharded training: FSDP2 on 2 CPU processes (gloo), meta-device models, and
ZeRO-3-style parameter placeholders (imitated: deepspeed is not installed).

The contract (docs/guides/scaling.md, "Sharded training: FSDP2 and ZeRO-3"): ``patch`` reads only
each norm's shape, dtype and device and runs its forward without hooks, so it works before or after
``fully_shard`` and on ZeRO-3 placeholders that carry ``ds_shape``; a model entirely on ``meta`` and
an empty placeholder without ``ds_shape`` are refused with a ``ValueError``.
"""

import os
import subprocess
import sys

import pytest
import torch

import hf_lnorm

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "fsdp2_worker.py")
SCENARIOS = ("plain", "patch_before", "patch_after", "meta_init")
NORMS = 5  # the tiny BERT's LayerNorms: embeddings + 2 per layer
STEPS = 5


def _run_workers(tmp_path, world=2):
    """Start ``world`` worker processes; they meet through a file store in ``tmp_path`` (no TCP port to pick)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TORCH_CPP_LOG_LEVEL="ERROR")
    store = str(tmp_path / "store")
    procs = [
        subprocess.Popen([sys.executable, WORKER, str(rank), str(world), store, str(tmp_path), *SCENARIOS],
                         env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(world)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=150)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {rank} exited {p.returncode}:\n{out[-4000:]}"
    return {name: torch.load(str(tmp_path / f"{name}.pt")) for name in SCENARIOS}


@pytest.fixture(scope="module")
def fsdp2_results(tmp_path_factory):
    return _run_workers(tmp_path_factory.mktemp("fsdp2"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_unpatched_fsdp2_run_trains(fsdp2_results):
    plain = fsdp2_results["plain"]
    assert plain["report"] == [] and plain["patched_calls"] == 0
    for rank_losses in plain["losses"]:
        assert len(rank_losses) == STEPS and len(set(rank_losses)) == STEPS  # the loss moves: the model trains
    assert plain["losses"][0] != plain["losses"][1]  # each rank trains on its own batches


@pytest.mark.parametrize("scenario", ["patch_before", "patch_after", "meta_init"])
def test_patched_fsdp2_run_matches_unpatched(fsdp2_results, scenario):
    plain, run = fsdp2_results["plain"], fsdp2_results[scenario]
    assert [r[:3] for r in run["report"]] == [(r[0], "patched", "") for r in run["report"]] and len(run["report"]) == NORMS
    # the patched norms' forward ran at every norm call of every step (on rank 0)
    assert run["patched_calls"] == NORMS * STEPS
    # the embeddings' norm is an FSDP module of its own: fully_shard swapped its class, the patch survives
    assert run["norm_classes"] == ["FSDPLayerNorm", "LayerNorm"]
    for ours, theirs in zip(run["losses"], plain["losses"]):
        assert max(abs(a - b) for a, b in zip(ours, theirs)) <= 1e-5, (ours, theirs)
    assert _max_diff(run["grads"], plain["grads"]) <= 1e-5
    assert _max_diff(run["params"], plain["params"]) <= 1e-5


def test_residual_fusion_before_and_after_sharding(fsdp2_results):
    """Before fully_shard the post-LN blocks are fused; after it their probe (which runs the block's own
    Linear) meets the sharded weight and rejects them, with the reason in the report."""
    fused = [r[3] for r in fsdp2_results["patch_before"]["report"] if r[3]]
    assert len(fused) == 4 and all(f["status"] == "fused" for f in fused)
    rejected = [r[3] for r in fsdp2_results["patch_after"]["report"] if r[3]]
    assert len(rejected) == 4 and all(f["status"] == "rejected" for f in rejected)
    assert all("DTensor" in f["reason"] for f in rejected), rejected[0]


# --------------------------------------------------------------------------- meta device


def _tiny_bert():
    sys.path.insert(0, HERE)
    try:
        from fsdp2_worker import tiny_bert
    finally:
        sys.path.remove(HERE)
    return tiny_bert()


def test_meta_model_is_refused_with_a_clear_error():
    with torch.device("meta"):
        model = _tiny_bert()
    with pytest.raises(ValueError, match=r"on the meta device \(first: 'bert\.embeddings\.word_embeddings\.weight'\).*to_empty"):
        hf_lnorm.patch(model)
    assert not list(hf_lnorm.iter_patched(model)) and len(hf_lnorm.patch_report(model)) == 0


# --------------------------------------------------------------------------- ZeRO-3-style placeholders


class Zero3Imitation:
    """What DeepSpeed ZeRO-3 does to a module, on one process: every parameter's ``data`` becomes an
    empty tensor (with ``ds_shape`` unless ``with_ds_shape=False``); a forward pre-hook on each module
    gathers its own parameters, a forward hook releases them and re-gathers them before the module's
    backward (a hook on its output's gradient)."""

    def __init__(self, model, with_ds_shape=True):
        self.full = {}
        self.gathers = 0
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if not own:
                continue
            for p in own:
                self.full[p] = p.data
                if with_ds_shape:
                    p.ds_shape = p.shape
            module.register_forward_pre_hook(lambda m, args, own=own: self._gather(own))
            module.register_forward_hook(lambda m, args, out, own=own: self._release(own, out))
            self._release(own, None)

    def _gather(self, params):
        self.gathers += 1
        for p in params:
            p.data = self.full[p]

    def _release(self, params, out):
        for p in params:
            p.data = torch.empty(0, dtype=p.dtype, device=p.device)
        if isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(lambda g: (self._gather(params), g)[1])


class ToyRMSNorm(torch.nn.Module):
    """A Llama-style RMSNorm: no ``normalized_shape``, so its size comes from the weight's (full) shape."""

    def __init__(self, size, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(size) + 0.5)
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        dtype = hidden_states.dtype
        h = hidden_states.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(dtype)


def _toy():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.LayerNorm(24), torch.nn.GELU(),
                               torch.nn.Linear(24, 16), ToyRMSNorm(16))


def _loss_and_grads(model):
    x = torch.randn(4, 7, 16, generator=torch.Generator().manual_seed(1))
    loss = model(x).pow(2).mean()
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_zero3_placeholders_are_patched_from_ds_shape():
    reference = _toy()
    want_loss, want_grads = _loss_and_grads(reference)

    model = _toy()
    zero = Zero3Imitation(model)
    assert all(p.numel() == 0 for p in model.parameters())
    hf_lnorm.patch(model)
    report = hf_lnorm.patch_report(model)
    assert [(r.name, r.status) for r in report] == [("1", "patched"), ("4", "patched")]
    # patching gathered nothing: the probe ran the norms' forward without their hooks
    assert zero.gathers == 0 and all(p.numel() == 0 for p in model.parameters())
    rms = model[4]
    assert hf_lnorm.patching._static_params(rms, rms._hf_lnorm_state.spec)[0] == (16,)  # from ds_shape
    loss, grads = _loss_and_grads(model)
    assert zero.gathers > 0
    assert abs(loss - want_loss) <= 1e-6
    assert _max_diff(grads, want_grads) <= 1e-6


def test_empty_placeholder_without_ds_shape_is_refused():
    model = _toy()
    Zero3Imitation(model, with_ds_shape=False)
    with pytest.raises(ValueError, match=r"weight of LayerNorm is an empty placeholder \(shape \(0,\)\).*before sharding"):
        hf_lnorm.patch(model)
    assert not list(hf_lnorm.iter_patched(model))
