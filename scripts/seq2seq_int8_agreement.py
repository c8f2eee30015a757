"""How far ONNX Runtime's fusions and dynamic int8 move an encoder-decoder's greedy translations.

Exports an ``lnorm-seq2seq`` checkpoint (with past key values), fuses every graph
(``optimize_seq2seq``), quantizes the fused graphs to dynamic int8
(``quantize_seq2seq_int8``) and decodes the same source sentences greedily with
PyTorch fp32 and through each set of graphs (``OrtEncoderDecoder``). Prints, per
variant, the largest logit difference from PyTorch (``verify``), the share of
PyTorch's generated tokens reproduced in place (``token_agreement``), the number
of identical sequences and the decoding wall time; writes the same as JSON.

Example (the translation recipe's output; sources from its eval_translations.jsonl):
    python scripts/seq2seq_int8_agreement.py runs/translation-lnorm-seq2seq \\
        --json data/results/seq2seq_int8_agreement_transformers-4.57.6.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import transformers  # noqa: E402

import hf_lnorm  # noqa: E402,F401  (registers the families)
from hf_lnorm._json import write_json  # noqa: E402
from hf_lnorm._machine import provenance  # noqa: E402
from hf_lnorm.export import export  # noqa: E402
from hf_lnorm.export.ort import check_fusions  # noqa: E402
from hf_lnorm.export.seq2seq import TEXT  # noqa: E402
from hf_lnorm.export.seq2seq_runtime import (  # noqa: E402
    OrtEncoderDecoder,
    expected_seq2seq_fusions,
    optimize_seq2seq,
    quantize_seq2seq_int8,
    token_agreement,
    verify,
)


def _sources(path: str, limit: int):
    if not os.path.isfile(path):
        raise SystemExit(f"error: no source sentences: {path!r} does not exist (pass --sources FILE.jsonl with a 'source' field)")
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line)["source"] for line in f if line.strip()]
    return rows[:limit]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="lnorm-seq2seq checkpoint folder")
    parser.add_argument("--sources", default=None, help="JSONL with a 'source' field (default: MODEL/eval_translations.jsonl)")
    parser.add_argument("--limit", type=int, default=276, help="sentences to translate (default 276)")
    parser.add_argument("--batch", type=int, default=16, help="sentences per generate call (default 16)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="greedy tokens per sentence (default 64)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        parser.error(f"{args.model!r} is not a model folder (no config.json)")
    for flag in ("limit", "batch", "max_new_tokens"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)

    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(args.model, dtype=torch.float32).eval()
    if model.config.model_type != "lnorm-seq2seq":
        parser.error(f"model type {model.config.model_type!r} is not supported; accepted: lnorm-seq2seq")
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    sources = _sources(args.sources or os.path.join(args.model, "eval_translations.jsonl"), args.limit)
    batches = [tokenizer(sources[i : i + args.batch], return_tensors="pt", padding=True, truncation=True,
                         max_length=model.config.max_position_embeddings) for i in range(0, len(sources), args.batch)]

    def decode(generate):
        start = time.perf_counter()
        outs = [generate(b["input_ids"], b["attention_mask"]) for b in batches]
        return outs, time.perf_counter() - start

    with torch.inference_mode():
        reference, pt_seconds = decode(lambda ids, mask: model.generate(
            ids, attention_mask=mask, max_new_tokens=args.max_new_tokens, do_sample=False, num_beams=1))
    pad = model.config.pad_token_id
    real = [int((r[:, 1:] != pad).sum()) for r in reference]
    rows = [{"variant": "pytorch-fp32", "max_abs_err": 0.0, "token_agreement": 1.0, "identical": len(sources),
             "seconds": round(pt_seconds, 2)}]
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"ort-fp32": os.path.join(tmp, "onnx"), "ort-fp32-fused": os.path.join(tmp, "fused"),
                "ort-int8-fused": os.path.join(tmp, "int8")}
        export(model, dirs["ort-fp32"], task="text2text-generation-with-past")
        counts = optimize_seq2seq(dirs["ort-fp32"], dirs["ort-fp32-fused"], model.config)
        expected = expected_seq2seq_fusions(model.config)
        fusions = {f: {"counts": {k: v for k, v in c.items() if v}, "problems": check_fusions(c, expected[f])} for f, c in counts.items()}
        quantize_seq2seq_int8(dirs["ort-fp32-fused"], dirs["ort-int8-fused"])
        for name, folder in dirs.items():
            graphs = OrtEncoderDecoder(TEXT, folder)
            got, seconds = decode(lambda ids, mask: graphs.generate(ids, mask, model.config, max_new_tokens=args.max_new_tokens))
            agree = sum(token_agreement(r, g, pad) * n for r, g, n in zip(reference, got, real)) / max(1, sum(real))
            same = sum(int(torch.equal(r[i][r[i] != pad], g[i][g[i] != pad])) for r, g in zip(reference, got) for i in range(r.shape[0]))
            rows.append({"variant": name, "max_abs_err": float(verify(TEXT, model, folder)), "token_agreement": round(agree, 4),
                         "identical": same, "seconds": round(seconds, 2)})

    print(f"model: {args.model}  sentences {len(sources)}  greedy tokens {args.max_new_tokens}  transformers {transformers.__version__}")
    for f, info in fusions.items():
        print(f"  {f}: {info['counts']}" + (f"  MISSING {info['problems']}" if info["problems"] else ""))
    print(f"{'variant':16s} {'max|err|':>9s} {'token agree':>11s} {'identical':>9s} {'seconds':>8s}")
    for r in rows:
        print(f"{r['variant']:16s} {r['max_abs_err']:9.2e} {r['token_agreement']:11.4f} {r['identical']:>9d} {r['seconds']:8.2f}")
    if args.json:
        write_json(args.json, {"model": args.model, "sentences": len(sources), "max_new_tokens": args.max_new_tokens,
                               "transformers": transformers.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
                               "fusions": fusions, "rows": rows, "provenance": provenance()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
