"""``hf-lnorm bench generate``: LNormGPT ``generate()`` tokens/s against ``GPT2LMHeadModel`` of identical size.

Both models get random weights and the same dimensions (vocabulary, context,
hidden size, layers, heads, MLP width, activation), run greedy decoding with a
KV cache from the same prompt for the same number of new tokens (end-of-text
disabled), on the CPU by default. Each model is warmed up once, then timed
``--repeats`` times; the median is reported. LNormGPT without the cache is
timed too, for reference.

    hf-lnorm bench generate                       # table on stdout
    hf-lnorm bench generate --json outputs/bench_generate.json --new-tokens 256

Numbers depend on the machine and its load; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Dict, List

from .._argtypes import positive_int
from .._json import write_json
from .._machine import machine_info, provenance


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the benchmark's options."""
    parser.add_argument("--vocab-size", type=positive_int, default=8000)
    parser.add_argument("--context", type=positive_int, default=512, help="max_position_embeddings / n_positions")
    parser.add_argument("--hidden-size", type=positive_int, default=256)
    parser.add_argument("--layers", type=positive_int, default=4)
    parser.add_argument("--heads", type=positive_int, default=4)
    parser.add_argument("--batch-size", type=positive_int, default=1)
    parser.add_argument("--prompt-tokens", type=positive_int, default=32)
    parser.add_argument("--new-tokens", type=positive_int, default=128)
    parser.add_argument("--repeats", type=positive_int, default=5)
    parser.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def _validate(args) -> None:
    from hf_lnorm.errors import UsageError

    if args.hidden_size % args.heads:
        raise UsageError(f"--hidden-size={args.hidden_size} is not divisible by --heads={args.heads}")
    if args.prompt_tokens + args.new_tokens > args.context:
        raise UsageError(
            f"--prompt-tokens={args.prompt_tokens} + --new-tokens={args.new_tokens} exceeds --context={args.context}"
        )


def build_models(args):
    """Return ``{"lnorm_gpt": model, "gpt2": model}`` with identical dimensions and random weights."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_lnorm.models import LNormGPTConfig, LNormGPTForCausalLM

    torch.manual_seed(args.seed)
    ours = LNormGPTForCausalLM(
        LNormGPTConfig(
            vocab_size=args.vocab_size,
            max_position_embeddings=args.context,
            hidden_size=args.hidden_size,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            intermediate_size=4 * args.hidden_size,
            hidden_act="gelu",
            dropout=0.0,
        )
    )
    gpt2_config = GPT2Config(
        vocab_size=args.vocab_size,
        n_positions=args.context,
        n_embd=args.hidden_size,
        n_layer=args.layers,
        n_head=args.heads,
        n_inner=4 * args.hidden_size,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    gpt2_config._attn_implementation = "sdpa"
    gpt2 = GPT2LMHeadModel(gpt2_config)
    return {"lnorm_gpt": ours.to(args.device).eval(), "gpt2": gpt2.to(args.device).eval()}


def _time_generate(model, prompt, new_tokens: int, repeats: int, use_cache: bool) -> List[float]:
    import torch

    kwargs = dict(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        use_cache=use_cache,
        pad_token_id=0,
        eos_token_id=None,
        attention_mask=torch.ones_like(prompt),
    )
    with torch.inference_mode():
        out = model.generate(prompt, **kwargs)  # warm-up
        if out.shape[1] != prompt.shape[1] + new_tokens:
            raise RuntimeError(f"{type(model).__name__} generated {out.shape[1] - prompt.shape[1]} tokens, not {new_tokens}")
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.generate(prompt, **kwargs)
            times.append(time.perf_counter() - start)
    return times


def run_benchmark(args) -> Dict:
    """Time the models and return the results as a dict (rows + settings + environment)."""
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    models = build_models(args)
    gen = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(1, args.vocab_size, (args.batch_size, args.prompt_tokens), generator=gen).to(args.device)
    cases = [("lnorm_gpt", True), ("gpt2", True), ("lnorm_gpt", False)]
    rows = []
    for name, use_cache in cases:
        model = models[name]
        times = _time_generate(model, prompt, args.new_tokens, args.repeats, use_cache)
        median = statistics.median(times)
        rows.append(
            {
                "model": type(model).__name__,
                "key": name,
                "kv_cache": use_cache,
                "parameters": sum(p.numel() for p in {p.data_ptr(): p for p in model.parameters()}.values()),
                "median_s": median,
                "tokens_per_s": args.batch_size * args.new_tokens / median,
                "times_s": times,
            }
        )
    base = next(r for r in rows if r["key"] == "gpt2")["tokens_per_s"]
    for row in rows:
        row["vs_gpt2"] = row["tokens_per_s"] / base
    settings = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("json", "func")}
    return {
        "benchmark": "generate",
        "settings": settings,
        "environment": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
            "cpu": machine_info()["cpu"],
            "device": args.device,
        },
        "rows": rows,
        "provenance": provenance(),
    }


def format_table(result: Dict) -> str:
    """The results as a fixed-width text table."""
    lines = [f"{'model':<28} {'kv cache':>8} {'params':>10} {'median s':>9} {'tokens/s':>9} {'vs GPT-2':>9}"]
    for row in result["rows"]:
        lines.append(
            f"{row['model']:<28} {str(row['kv_cache']):>8} {row['parameters']:>10,} {row['median_s']:>9.3f} "
            f"{row['tokens_per_s']:>9.1f} {row['vs_gpt2']:>8.2f}x"
        )
    s = result["settings"]
    env = result["environment"]
    lines.append(
        f"(batch {s['batch_size']}, prompt {s['prompt_tokens']}, new tokens {s['new_tokens']}, hidden {s['hidden_size']}, "
        f"layers {s['layers']}, heads {s['heads']}, vocab {s['vocab_size']}; median of {s['repeats']}; "
        f"torch {env['torch']}, transformers {env['transformers']}, {env['threads']} threads, {env['device']})"
    )
    return "\n".join(lines)


def run(args) -> int:
    """CLI entry point: validate, time, print the table, optionally write JSON."""
    _validate(args)
    result = run_benchmark(args)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
