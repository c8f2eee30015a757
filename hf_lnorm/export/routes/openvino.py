"""OpenVINO routes of ``hf-lnorm optimize``: the plain ONNX export converted to OpenVINO, float and NNCF int8.

    openvino               no quantization, the CPU plugin's default inference precision (bf16 on CPUs with bf16
                           instructions, else f32)
    openvino-f32           no quantization, f32 forced (exact up to float rounding)
    openvino-int8-default  NNCF int8 exactly as Optimum Intel's default ``OVQuantizationConfig()`` does it
    openvino-int8          NNCF int8 with hf_lnorm's choices (preset and SmoothQuant alpha chosen together on the
                           calibration questions, attention's core in float, every calibration question)
    openvino-trimmed       ``openvino`` that skips each batch's trailing padding in the graph (``trim_padding``)
    openvino-int8-trimmed  ``openvino-int8-default``'s int8 model, skipping each batch's trailing padding

The two trimmed routes compute only up to the last real token of the batch and pad their outputs back to the input
length, so inputs padded to a fixed length (``padding="max_length"``, as SQuAD-style preprocessing does) run faster
while the answers stay those of the untrimmed model. Once per job, on the float model, they check on calibration
batches with part of each mask cleared that trimming leaves the outputs at real tokens unchanged, and fail if it
does not.

Every route times and evaluates the dynamic-shape model (one stream, latency hint, the job's threads) that it
deploys as ``openvino_model.xml`` / ``.bin`` with ``config.json``: the folder Optimum Intel's
``OVModelForQuestionAnswering.from_pretrained`` loads, and plain OpenVINO too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from ..tasks import get_task
from ..trimming import accept_trim_error, trim_check_feeds, trim_note
from .base import Built, Feed, Route, RouteContext

REQUIRES = ("openvino", "nncf")
INSTALL_HINT = 'pip install "hf-lnorm[openvino]"'

# hf_lnorm's tuned int8 (openvino-int8); scripts/openvino_variants.py --explore measures each choice against the default
TUNED_ALPHAS = (0.75, 0.95)  # SmoothQuant alphas tried; -1 = SmoothQuant off
TUNED_PRESETS = ("mixed", "performance")  # asymmetric / symmetric activations, tried with every alpha
TUNED_FLOAT_ATTENTION = True  # attention's Q.K and P.V MatMuls stay in float (higher agreement, same speed)
TUNED_PRECISION = "default"  # f32 for the float ops was slower, and not more accurate
TUNED_IGNORED_TYPES: Tuple[str, ...] = ()
TUNED_SUBSET = 10_000  # every calibration item


def tuned_overflow_fix() -> str:
    """NNCF's overflow fix for ``openvino-int8``: ``"enable"`` (7-bit weights) on x86 CPUs without VNNI, whose int8
    kernels add u8 x s8 products in saturating int16, else ``"disable"``, as Optimum Intel's default."""
    import platform

    from ..._machine import VNNI_FLAGS, machine_info

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "disable"
    isa = machine_info().get("int8_isa")
    return "enable" if isa is not None and not set(isa) & set(VNNI_FLAGS) else "disable"


# Static shapes are off: an int8 model compiled for a static shape computes different logits from the dynamic-shape
# model a user loads from the folder (on the bundled QA model 6 of 200 answers changed), so the job times and
# evaluates exactly what it deploys. ``ctx.extra["openvino_static_shapes"]`` turns them on.
STATIC_SHAPES = False


def _load_hint(precision: str) -> str:
    """The one line that loads the folder with plain OpenVINO (the README adds the Optimum Intel equivalent)."""
    config = ', {"INFERENCE_PRECISION_HINT": "f32"}' if precision == "f32" else ""
    return f'openvino.Core().compile_model(PATH + "/openvino_model.xml", "CPU"{config})'


def _deployer(model, hf_config):
    def deploy(path: Path) -> None:
        from ..openvino import save_ir

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_ir(model, path, hf_config)

    return deploy


def _batches(items: Sequence[Feed], batch: int = 8) -> List[Feed]:
    """Items of one row each regrouped into batches of ``batch`` rows (same sequence length only)."""
    out: List[Feed] = []
    for i in range(0, len(items), batch):
        group = items[i : i + batch]
        if len({g["input_ids"].shape[1] for g in group}) == 1:
            out.append({k: np.concatenate([g[k] for g in group]) for k in group[0]})
        else:
            out.extend(group)
    return out


def logit_error(run, ref_run, feeds: Sequence[Feed]) -> float:
    """Mean |run - ref_run| over the real (unpadded) tokens of ``feeds``, averaged over the outputs."""
    errs = []
    for feed in feeds:
        mask = feed["attention_mask"].astype(bool)
        got, ref = run(feed), ref_run(feed)
        errs.append(float(np.mean([np.abs(g - r)[mask].mean() for g, r in zip(got, ref)])))
    return float(np.mean(errs))


def _float_route(precision: str):
    def build(ctx: RouteContext) -> Built:
        from ..openvino import OpenVINORunner, convert_onnx, plugin_default_precision

        model = convert_onnx(ctx.onnx_path)
        static = bool(ctx.extra.get("openvino_static_shapes", STATIC_SHAPES))
        run = OpenVINORunner(model, ctx.output_names, threads=ctx.threads, precision=precision, static=static)
        used = run.config["INFERENCE_PRECISION_HINT"]
        hint = _load_hint(precision)
        notes = [f"OpenVINO {used} inference (plugin default here: {plugin_default_precision()}), "
                 + ("static shape compiled per input shape" if static else "dynamic shapes, as deployed")]
        return Built(runner=run, deploy=_deployer(model, ctx.model.config), load_hint=hint, notes=notes,
                     info={"precision": used, "static_shapes": static, "quantization": None,
                           "compile_config": dict(run.config)})

    return build


def _trimmed(model, ctx: RouteContext):
    """``(trim_padding copy of model, max |trimmed - model| at real tokens)`` on ``trim_check_feeds`` (f32)."""
    from ..openvino import padding_trim_error, trim_padding

    feeds = trim_check_feeds(ctx.calibration)
    trimmed = trim_padding(model, get_task(ctx.task).seq_outputs)
    return trimmed, padding_trim_error(model, trimmed, feeds, ctx.output_names, ctx.threads)


def _trimmed_float(ctx: RouteContext):
    """``_trimmed`` of the float model, once per job (both trimmed routes rest on this check); raises when trimming
    changes its outputs at real tokens (a model that mixes tokens along the sequence other than through masked
    attention)."""
    from ..openvino import convert_onnx

    key = ("openvino.trimmed-float", str(ctx.onnx_path))
    if key not in ctx.shared:
        ctx.shared[key] = _trimmed(convert_onnx(ctx.onnx_path), ctx)
    trimmed, err = ctx.shared[key]
    return trimmed, accept_trim_error(err)


def _trimmed_float_route(ctx: RouteContext) -> Built:
    from ..openvino import OpenVINORunner, plugin_default_precision

    model, err = _trimmed_float(ctx)
    run = OpenVINORunner(model, ctx.output_names, threads=ctx.threads, precision="default", static=False)
    used = run.config["INFERENCE_PRECISION_HINT"]
    notes = [f"OpenVINO {used} inference (plugin default here: {plugin_default_precision()}); " + trim_note(err)]
    return Built(runner=run, deploy=_deployer(model, ctx.model.config), load_hint=_load_hint("default"), notes=notes,
                 info={"precision": used, "static_shapes": False, "quantization": None, "trim_padding": True,
                       "trim_error": err, "compile_config": dict(run.config)})


def _default_int8(ctx: RouteContext):
    """``(Optimum Intel's default int8 model, config, calibration items)``, quantized once per job."""
    from ..openvino import Int8Config, calibration_items, convert_onnx, quantize_int8

    key = ("openvino.int8-default", str(ctx.onnx_path))
    if key not in ctx.shared:
        items = calibration_items(ctx.calibration, batch=1)
        config = Int8Config()  # Optimum Intel's defaults, 128 items at most
        ctx.shared[key] = (quantize_int8(convert_onnx(ctx.onnx_path), items, config), config, items)
    return ctx.shared[key]


def build_int8_default(ctx: RouteContext) -> Built:
    """``openvino-int8-default``: what Optimum Intel's default int8 does, on the job's calibration questions.

    Replicates ``OVQuantizationConfig()`` of optimum-intel 2.2.0 (``to_nncf_dict``): ``preset=MIXED`` (``sym=False``),
    ``model_type=TRANSFORMER``, SmoothQuant at NNCF's default MatMul alpha (0.95 in NNCF 3.x; the config passes none),
    ``subset_size=128`` (``num_samples=None``), ``fast_bias_correction=True``, ``overflow_fix=DISABLE``, no ignored
    scope; calibration items of batch 1 (``OVQuantizer``'s default ``batch_size``). With the 160 shipped training
    questions NNCF reads the first 128. The model is compiled with the plugin's default precision, as
    ``OVModelForQuestionAnswering`` does.
    """
    from ..openvino import OpenVINORunner

    model, config, items = _default_int8(ctx)
    static = bool(ctx.extra.get("openvino_static_shapes", STATIC_SHAPES))
    run = OpenVINORunner(model, ctx.output_names, threads=ctx.threads, precision="default", static=static)
    hint = _load_hint("default")
    notes = [f"NNCF int8 with Optimum Intel's default settings on {min(len(items), config.subset_size)} of "
             f"{len(items)} calibration questions"]
    return Built(runner=run, deploy=_deployer(model, ctx.model.config), load_hint=hint, notes=notes,
                 info={"precision": run.config["INFERENCE_PRECISION_HINT"], "static_shapes": static,
                       "quantization": config.to_dict(), "calibration_items": len(items),
                       "compile_config": dict(run.config)})


def build_int8_trimmed(ctx: RouteContext) -> Built:
    """``openvino-int8-trimmed``: the ``openvino-int8-default`` model (the same NNCF int8, built once per job) with
    ``trim_padding``.

    Whether trimming applies is a property of the model, checked on the float model (as ``openvino-trimmed`` does):
    an int8 model's outputs also move with the shape it runs at, because a float difference in the last bit can
    flip an activation's int8 rounding (one quantization step), so the int8 model's own difference is recorded
    (``int8_trim_error``) but not held to the float tolerance. The route's agreement is measured like any other's.
    """
    from ..openvino import OpenVINORunner

    _, err = _trimmed_float(ctx)
    base, config, items = _default_int8(ctx)
    model, int8_err = _trimmed(base, ctx)
    run = OpenVINORunner(model, ctx.output_names, threads=ctx.threads, precision="default", static=False)
    notes = [f"NNCF int8 with Optimum Intel's default settings on {min(len(items), config.subset_size)} of "
             f"{len(items)} calibration questions; " + trim_note(err, "f32, float model")
             + f"; int8 model trimmed against untrimmed, f32: {int8_err:.2g}"]
    return Built(runner=run, deploy=_deployer(model, ctx.model.config), load_hint=_load_hint("default"), notes=notes,
                 info={"precision": run.config["INFERENCE_PRECISION_HINT"], "static_shapes": False,
                       "quantization": config.to_dict(), "calibration_items": len(items), "trim_padding": True,
                       "trim_error": err, "int8_trim_error": int8_err, "compile_config": dict(run.config)})


def choose_alpha(fp_model, items: Sequence[Feed], output_names, threads: int, alphas: Sequence[float], base_config,
                 precision: str, presets: Sequence[str] = ()) -> Tuple[Any, Tuple[str, float], List[Tuple[str, float, float]]]:
    """Quantize with each (preset, SmoothQuant alpha) and keep the one whose logits are closest to f32 on ``items``.

    Only calibration data is used: the error is the mean |int8 - f32| over real tokens of the calibration items.

    Args:
        presets: NNCF presets to try (``"mixed"``, ``"performance"``); empty: ``base_config.preset`` only.

    Returns:
        ``(quantized model, (chosen preset, chosen alpha), [(preset, alpha, error), ...])``.
    """
    from ..openvino import OpenVINORunner, quantize_int8

    feeds = _batches(items)
    ref = OpenVINORunner(fp_model, output_names, threads=threads, precision="f32", static=False)
    best: Optional[Tuple[Tuple[str, float], float, Any]] = None
    tried = []
    for preset in presets or (base_config.preset,):
        for alpha in alphas:
            model = quantize_int8(fp_model, items, replace(base_config, preset=preset, smooth_quant_alpha=alpha))
            run = OpenVINORunner(model, output_names, threads=threads, precision=precision, static=False)
            err = logit_error(run, ref, feeds)
            tried.append((preset, float(alpha), round(err, 5)))
            if best is None or err < best[1]:
                best = ((preset, float(alpha)), err, model)
    return best[2], best[0], tried


def build_int8_tuned(ctx: RouteContext) -> Built:
    """``openvino-int8``: NNCF int8 with hf_lnorm's choices.

    Differences from ``openvino-int8-default``: the NNCF preset (``TUNED_PRESETS``: asymmetric or symmetric
    activations) and SmoothQuant's alpha (``TUNED_ALPHAS``) chosen together by mean |logit error| against f32 on the
    calibration questions (never the evaluation set; the job's ``smooth_alpha`` fixes the alpha instead); attention's
    MatMuls between two activations (Q.K and P.V) kept in floating point (``TUNED_FLOAT_ATTENTION``; an export whose
    attention OpenVINO reads as one ``ScaledDotProductAttention`` op has none, and NNCF leaves that op in float
    anyway); every calibration item used
    (``subset_size`` not capped at 128); NNCF's overflow fix (7-bit weights) on x86 CPUs without VNNI
    (``tuned_overflow_fix``). The inference precision is the plugin's default. ``ctx.extra`` keys
    ``openvino_alphas``, ``openvino_presets``, ``openvino_precision``, ``openvino_float_attention``,
    ``openvino_overflow_fix`` and ``openvino_ignored_types`` override these choices.
    """
    from ..openvino import Int8Config, OpenVINORunner, activation_matmuls, calibration_items, convert_onnx

    items = calibration_items(ctx.calibration, batch=1)
    alphas = tuple(ctx.extra.get("openvino_alphas", TUNED_ALPHAS))
    if ctx.extra.get("smooth_alpha") is not None:
        alphas = (float(ctx.extra["smooth_alpha"]),)
    precision = ctx.extra.get("openvino_precision", TUNED_PRECISION)
    fp_model = convert_onnx(ctx.onnx_path)
    float_attention = bool(ctx.extra.get("openvino_float_attention", TUNED_FLOAT_ATTENTION))
    presets = tuple(ctx.extra.get("openvino_presets", TUNED_PRESETS))
    base = Int8Config(preset=presets[0], subset_size=max(1, min(TUNED_SUBSET, len(items))),
                      overflow_fix=ctx.extra.get("openvino_overflow_fix") or tuned_overflow_fix(),
                      ignored_types=list(ctx.extra.get("openvino_ignored_types", TUNED_IGNORED_TYPES)),
                      ignored_names=activation_matmuls(fp_model) if float_attention else [])
    model, (preset, alpha), tried = choose_alpha(fp_model, items, ctx.output_names, ctx.threads, alphas, base, precision,
                                                 presets)
    base = replace(base, preset=preset)
    static = bool(ctx.extra.get("openvino_static_shapes", STATIC_SHAPES))
    run = OpenVINORunner(model, ctx.output_names, threads=ctx.threads, precision=precision, static=static)
    how = ", ".join(f"{p} {a:g} -> {e:.4f}" for p, a, e in tried)
    notes = [f"NNCF int8 (hf_lnorm): preset {preset} and SmoothQuant alpha {alpha:g} chosen on {len(items)} calibration "
             f"questions by mean |logit error| vs f32 ({how}); "
             f"{len(base.ignored_names)} attention MatMuls and op types [{', '.join(base.ignored_types)}] kept in float; "
             f"overflow fix {base.overflow_fix}" + (" (7-bit weights: this CPU has no VNNI)" if base.overflow_fix == "enable" else "")]
    return Built(runner=run, deploy=_deployer(model, ctx.model.config), load_hint=_load_hint(precision), notes=notes,
                 info={"precision": run.config["INFERENCE_PRECISION_HINT"], "static_shapes": static,
                       "quantization": replace(base, smooth_quant_alpha=alpha).to_dict(), "search": tried,
                       "float_attention": float_attention, "calibration_items": len(items), "compile_config": dict(run.config)})


def _route(name: str, description: str, build, reference: bool) -> Route:
    return Route(name=name, runtime="openvino", description=description, build=build, requires=REQUIRES,
                 install_hint=INSTALL_HINT, needs_onnx=True, reference=reference)


ROUTES = [
    _route("openvino", "OpenVINO, the CPU plugin's default precision (bf16 where the CPU has it)", _float_route("default"), True),
    _route("openvino-f32", "OpenVINO, f32 forced", _float_route("f32"), False),
    _route("openvino-int8-default", "OpenVINO + NNCF int8, Optimum Intel's default configuration", build_int8_default, True),
    _route("openvino-int8", "OpenVINO + NNCF int8, symmetric activations, float attention core, SmoothQuant alpha "
           "chosen on calibration data (hf_lnorm)", build_int8_tuned, False),
    _route("openvino-trimmed", "OpenVINO, the plugin's default precision, trailing padding skipped in the graph "
           "(hf_lnorm)", _trimmed_float_route, False),
    _route("openvino-int8-trimmed", "OpenVINO + NNCF int8 (Optimum Intel's default configuration), trailing padding "
           "skipped in the graph (hf_lnorm)", build_int8_trimmed, False),
]
