"""Train a small GPT-2-architecture character LM on Shakespeare, then compare held-out perplexity fp32 vs int8.

The model is ``transformers.GPT2LMHeadModel`` built from a config (no download),
trained on the first 95% of the text; perplexity is measured on the last 5%
(held out, never trained on) in non-overlapping windows. Variants: fp32,
``torch.ao`` dynamic int8, ``hf_lnorm.patch(mode="quantized")`` (every Linear int8)
and the same plus ``hf_lnorm.smooth`` (calibrated on training text), each also with
``all_linears=False`` (``-readers``: only the norms' readers int8).

Usage:
    python scripts/prepare_data.py shakespeare          # builds data/cache/shakespeare.txt
    python scripts/quant_lm_perplexity.py --out runs/quant_lm --json runs/quant_lm/ppl.json
    python scripts/quant_lm_perplexity.py --out runs/quant_lm --eval-only   # re-measure a trained model

Prints a table and writes JSON ``{"rows": [{"variant", "perplexity", "increase_pct"}], ...}``.
The model folder ``--out`` is written under a temporary name and renamed when complete; an
existing one is replaced only with ``--overwrite`` and only if this project wrote it
(``hf_lnorm.outputs``): a folder of other files is refused before training.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
import warnings

import torch
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TEXT = os.path.join(REPO, "data", "cache", "shakespeare.txt")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", default=DEFAULT_TEXT, help="training text (default data/cache/shakespeare.txt)")
    p.add_argument("--out", required=True, help="folder for the trained model (safetensors) and vocab")
    p.add_argument("--json", default=None, help="write results here")
    p.add_argument("--steps", type=int, default=800, help="training steps (default 800)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=128, help="training/eval window in characters")
    p.add_argument("--n-embd", type=int, default=192)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-chars", type=int, default=65536, help="held-out characters scored (default 65536)")
    p.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant alpha")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-only", action="store_true", help="load the model from --out instead of training")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out written by an earlier run (never a folder of other files)")
    args = p.parse_args(argv)
    if not os.path.isfile(args.text):
        p.error(f"--text {args.text!r} does not exist; build it with: python scripts/prepare_data.py shakespeare "
                "(or pass --text hf_lnorm/data/shakespeare_sample.txt)")
    if not 0.0 <= args.alpha <= 1.0:
        p.error(f"--alpha must be in [0, 1], got {args.alpha}")
    return args


def load_text(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    split = int(len(text) * 0.95)
    return text[:split], text[split:]


def encode(text, stoi):
    unk = stoi["\0"]
    return torch.tensor([stoi.get(c, unk) for c in text], dtype=torch.long)


def perplexity(model, data, context, batch=16):
    """exp(mean next-character NLL) over non-overlapping windows of ``context`` + 1 characters."""
    n = (len(data) - 1) // context
    windows = data[: n * context + 1]
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, n, batch):
            rows = [windows[j * context: j * context + context + 1] for j in range(i, min(n, i + batch))]
            x = torch.stack([r[:-1] for r in rows])
            y = torch.stack([r[1:] for r in rows])
            logits = model(input_ids=x).logits.float()
            total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    return math.exp(total / count)


def train(args, train_ids, vocab_size):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=args.context, n_embd=args.n_embd, n_layer=args.n_layer,
                        n_head=args.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    t0 = time.time()
    for step in range(args.steps):
        starts = torch.randint(0, len(train_ids) - args.context - 1, (args.batch,), generator=gen)
        x = torch.stack([train_ids[s: s + args.context] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - t0:.0f}s", flush=True)
    return model.eval()


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, REPO)
    import hf_lnorm
    from hf_lnorm._json import write_json
    from hf_lnorm._machine import provenance
    from hf_lnorm.outputs import OutputExistsError, check_output_dir, staged_output_dir
    from transformers import GPT2LMHeadModel

    if not args.eval_only:
        try:
            check_output_dir(args.out, args.overwrite, [args.text])
        except OutputExistsError as exc:
            print(f"quant_lm_perplexity: error: {exc}", file=sys.stderr)
            return 2
    train_text, heldout_text = load_text(args.text)
    vocab_path = os.path.join(args.out, "vocab.json")
    if args.eval_only:
        with open(vocab_path, encoding="utf-8") as f:
            chars = json.load(f)
        model = GPT2LMHeadModel.from_pretrained(args.out).eval()
    else:
        chars = ["\0"] + sorted(set(train_text))
    stoi = {c: i for i, c in enumerate(chars)}
    train_ids, heldout_ids = encode(train_text, stoi), encode(heldout_text, stoi)[: args.eval_chars + 1]
    if not args.eval_only:
        with staged_output_dir(args.out, args.overwrite, [args.text], writer="scripts/quant_lm_perplexity.py") as tmp:
            model = train(args, train_ids, len(chars))
            model.save_pretrained(tmp)
            with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
                json.dump(chars, f)

    gen = torch.Generator().manual_seed(1)
    calib = []
    for _ in range(8):
        starts = torch.randint(0, len(train_ids) - args.context, (8,), generator=gen)
        calib.append({"input_ids": torch.stack([train_ids[s: s + args.context] for s in starts])})

    variants = {"fp32": model}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        variants["torch-dynamic-int8"] = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    for name, smooth, all_linears in (("hf_lnorm-int8", False, True), ("hf_lnorm-int8-smooth", True, True),
                                      ("hf_lnorm-int8-readers", False, False), ("hf_lnorm-int8-smooth-readers", True, False)):
        m = copy.deepcopy(model)
        hf_lnorm.patch(m, mode="quantized", example_inputs=calib[0], all_linears=all_linears)
        if smooth:
            hf_lnorm.smooth(m, calib, alpha=args.alpha)
        variants[name] = m
    rows = []
    base = None
    for name, m in variants.items():
        ppl = perplexity(m, heldout_ids, args.context)
        base = base or ppl
        rows.append({"variant": name, "perplexity": round(ppl, 4), "increase_pct": round(100 * (ppl / base - 1), 3)})
        print(f"{name:<26} perplexity {ppl:8.4f}  {rows[-1]['increase_pct']:+.2f}%", flush=True)
    report = hf_lnorm.patch_report(variants["hf_lnorm-int8"])
    consumers = {r.name: r.extra.get("consumers") for r in report.patched}
    if args.json:
        write_json(args.json, {"rows": rows, "heldout_chars": len(heldout_ids) - 1, "context": args.context,
                               "steps": args.steps, "text": os.path.relpath(args.text, REPO), "consumers": consumers,
                               "provenance": provenance()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
