"""Patch the norm layers of a transformers model, compare its outputs with the stock model, undo the patch.

`hf_lnorm.patch` finds every LayerNorm / RMSNorm by structure, so the same call
works on BERT, Llama or a model you trained yourself. The report says, per norm,
which variant it is and whether it was patched (and why not, when it was not).

    python examples/patch_any_model.py                         # the bundled MiniLM QA model
    python examples/patch_any_model.py path/to/model           # a local folder or a Hub id
    python examples/patch_any_model.py --quick                 # tiny random Llama and BERT built from configs
"""

import argparse
import json
import os
import tempfile

import torch
from transformers import AutoModel, BertConfig, LlamaConfig

import hf_lnorm
from hf_lnorm.inputs import dummy_inputs
from hf_lnorm.loading import default_qa_model, load_model


def check(name, model):
    inputs = dummy_inputs(model, batch_size=2, seq_len=32)
    with torch.no_grad():
        before = model(**inputs)[0]
        hf_lnorm.patch(model)  # mode="fused": numerically equivalent kernels
        after = model(**inputs)[0]
        report = hf_lnorm.patch_report(model)
        hf_lnorm.unpatch(model)  # exact restore
        restored = model(**inputs)[0]
    print(f"== {name}\n{report.table()}\n{report.summary()}")
    print(f"max |patched - stock| = {(after - before).abs().max().item():.3e}")
    print(f"unpatched outputs identical to stock: {torch.equal(restored, before)}\n")
    return report.to_dicts()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="local folder or Hub id (default: the bundled QA model)")
    parser.add_argument("--quick", action="store_true", help="tiny random models built from configs (no weights)")
    parser.add_argument("--output-dir", help="new folder for patch_report.json (default: a fresh temporary folder)")
    args = parser.parse_args()
    if args.output_dir and os.path.exists(args.output_dir):
        parser.error(f"--output-dir {args.output_dir!r} already exists; pass a new folder")
    torch.manual_seed(0)
    if args.quick:
        small = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
        models = {"tiny Llama (RMSNorm)": AutoModel.from_config(LlamaConfig(**small)),
                  "tiny BERT (LayerNorm)": AutoModel.from_config(BertConfig(**small))}
    elif args.model:
        models = {args.model: load_model(args.model, task="base")}
    else:
        path, description = default_qa_model()
        models = {description: load_model(path, task="question-answering")}
    reports = {name: check(name, model.eval()) for name, model in models.items()}
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="patch_any_model-")
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "patch_report.json"), "w") as f:
        json.dump(reports, f, indent=2, default=str)
    print(f"reports written to {os.path.join(output_dir, 'patch_report.json')}")


if __name__ == "__main__":
    main()
