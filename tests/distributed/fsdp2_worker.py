"""One rank of the FSDP2 checks in ``test_fsdp2.py``: CPU, gloo, 2 processes.

Run as ``python fsdp2_worker.py RANK WORLD_SIZE INIT_FILE OUT_DIR SCENARIO...``. The process group
rendezvous goes through ``INIT_FILE`` (a ``file://`` store), so no TCP port is chosen here and two
test runs on one machine cannot collide. Each scenario trains the same tiny BERT (same initial
weights, same per-rank batches) for ``STEPS`` optimizer steps under ``fully_shard`` and rank 0
saves ``OUT_DIR/<scenario>.pt``: the per-step losses of every rank, the full gradients of the last
step and the full parameters at the end, and the patch report.
"""

import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

import hf_lnorm

STEPS = 5


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


def initial_model():
    torch.manual_seed(0)
    return tiny_bert()


def batches(rank):
    gen = torch.Generator().manual_seed(1000 + rank)  # each rank its own data, as in data-parallel training
    return [(torch.randint(0, 64, (4, 12), generator=gen), torch.randint(0, 3, (4,), generator=gen)) for _ in range(STEPS)]


def shard(model, mesh):
    fully_shard(model.bert.embeddings.LayerNorm, mesh=mesh)  # a norm that is itself an FSDP module
    for layer in model.bert.encoder.layer:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full(t):
    return t.full_tensor() if isinstance(t, DTensor) else t


def train(model, rank):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses, grads = [], {}
    for step, (ids, labels) in enumerate(batches(rank)):
        opt.zero_grad()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        if step == STEPS - 1:
            grads = {n: full(p.grad).detach().clone() for n, p in model.named_parameters()}
        opt.step()
        losses.append(loss.item())
    params = {n: full(p).detach().clone() for n, p in model.named_parameters()}
    return losses, grads, params


def load_full_state(model, reference):
    """Copy ``reference``'s full tensors into the (sharded, materialised) ``model``."""
    ref = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        src = ref[name].detach()
        if isinstance(p, DTensor):
            src = distribute_tensor(src, p.device_mesh, p.placements).to_local()
            p = p.to_local()
        with torch.no_grad():
            p.copy_(src)
    ref_buffers = dict(reference.named_buffers())
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(ref_buffers[name])


def report_of(model):
    return [(r.name, r.status, r.reason, r.extra.get("residual_fusion", {})) for r in hf_lnorm.patch_report(model)]


class CountingPatchedForward:
    """Counts the calls of the patched norms' forward in this process.

    ``patch`` binds ``hf_lnorm.patching._patched_forward`` to each norm it patches; this wraps that
    function before any ``patch`` call, so every call of a patched norm's forward is counted.
    """

    def __init__(self):
        self.calls = 0
        inner = hf_lnorm.patching._patched_forward

        def counted(module, hidden_states):
            self.calls += 1
            return inner(module, hidden_states)

        hf_lnorm.patching._patched_forward = counted  # this worker process only


def scenario(name, mesh, rank, counter):
    if name == "plain":
        model = shard(initial_model(), mesh)
    elif name == "patch_before":
        model = shard(hf_lnorm.patch(initial_model()), mesh)
    elif name == "patch_after":
        model = hf_lnorm.patch(shard(initial_model(), mesh))
    elif name == "meta_init":  # the FSDP2 large-model recipe: build on meta, shard, materialise, load, then patch
        with torch.device("meta"):
            model = tiny_bert()
        model = shard(model, mesh)
        model.to_empty(device="cpu")
        load_full_state(model, initial_model())
        model = hf_lnorm.patch(model)
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    report = report_of(model)
    counter.calls = 0
    losses, grads, params = train(model, rank)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, losses)
    norm_classes = sorted({type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.LayerNorm)})
    return {"losses": gathered, "grads": grads, "params": params, "report": report, "patched_calls": counter.calls,
            "norm_classes": norm_classes}


def main(argv):
    rank, world, init_file, out_dir = int(argv[0]), int(argv[1]), argv[2], argv[3]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        counter = CountingPatchedForward()
        for name in argv[4:]:
            result = scenario(name, mesh, rank, counter)
            if rank == 0:
                torch.save(result, os.path.join(out_dir, f"{name}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
