"""OpenVINO: convert an ONNX export, compile it for CPU, quantize it to int8 with NNCF, save it as IR.

The steps, each one function:

    convert_onnx        ONNX file -> ``openvino.Model`` (``openvino.convert_model``; works on any transformers line,
                        since it reads the ONNX export rather than the PyTorch model)
    compile_config      the CPU plugin options: threads, latency hint, one stream, an explicit inference precision
    OpenVINORunner      numpy feed -> outputs; compiles a static-shape copy per input shape on first call (cached),
                        or runs the dynamic model
    Int8Config          what ``nncf.quantize`` is given (preset, model type, SmoothQuant alpha, ignored scope, ...)
    quantize_int8       post-training int8 with NNCF on calibration feeds
    activation_matmuls  the MatMuls between two activations (attention), to keep in float
    trim_padding        a copy of a model that skips the trailing padding of each batch (same inputs and outputs)
    padding_trim_error  how far the trimmed model's outputs are from the full model's on real tokens
    save_ir             ``openvino_model.xml`` + ``.bin`` (+ ``config.json``): the folder layout Optimum Intel's
                        ``OVModelFor*`` classes read, loadable with plain ``openvino.Core`` as well
    verify_openvino     max |OpenVINO - PyTorch| on fresh inputs
    telemetry_off       a block in which OpenVINO's usage telemetry sends nothing (the calls above run in one)

Telemetry: ``openvino.convert_model`` and NNCF report usage through ``openvino_telemetry`` unless the user opted out
(``opt_in_out --opt_out``). It sends each event from a worker thread by forking a process, which can deadlock a
process that imports modules at the same moment, and it cannot reach its server offline. ``convert_onnx`` and
``quantize_int8`` therefore run inside ``telemetry_off()``: no event is sent from them, whatever the consent file
says; the user's consent file is neither read for them nor changed. The first ``import openvino`` (which sends an
event of its own) happens inside it too.

Inference precision: on a CPU with bf16 instructions (AVX512-BF16, AMX) the CPU plugin computes in bf16 unless told
otherwise; ``precision="f32"`` forces float32 (exact up to float rounding), ``"bf16"`` asks for bf16 and
``"default"`` leaves the plugin's own choice.

Examples:
    ```python
    from hf_lnorm.export.openvino import OpenVINORunner, convert_onnx, save_ir

    model = convert_onnx("bert-qa-onnx/model.onnx")
    run = OpenVINORunner(model, ("start_logits", "end_logits"), threads=4, precision="f32")
    start, end = run({"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
    save_ir(model, "bert-qa-openvino")   # then: openvino.Core().read_model("bert-qa-openvino/openvino_model.xml")
    ```
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .trimming import PAD_FILL

logger = logging.getLogger("hf_lnorm")

PathLike = Union[str, os.PathLike]

OV_XML = "openvino_model.xml"
OV_BIN = "openvino_model.bin"
PRECISIONS = ("default", "bf16", "f32")
PRESETS = ("mixed", "performance")
INSTALL_HINT = 'pip install "hf-lnorm[openvino]"'

__all__ = [
    "INSTALL_HINT",
    "activation_matmuls",
    "Int8Config",
    "OV_BIN",
    "OV_XML",
    "OpenVINORunner",
    "PRECISIONS",
    "PRESETS",
    "calibration_items",
    "compile_config",
    "convert_onnx",
    "plugin_default_precision",
    "quantize_int8",
    "save_ir",
    "padding_trim_error",
    "telemetry_off",
    "trim_padding",
    "verify_openvino",
]


def _import_quietly(module: str, label: str):
    """``module``, imported with telemetry off: importing ``openvino`` (which ``nncf`` imports) initialises OpenVINO's
    telemetry and sends an event."""
    try:
        with telemetry_off():
            return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{label} is not installed: {INSTALL_HINT}") from None


def _openvino():
    return _import_quietly("openvino", "OpenVINO")


def _nncf():
    return _import_quietly("nncf", "NNCF")


@contextlib.contextmanager
def telemetry_off():
    """Keep OpenVINO's usage telemetry from sending any event inside the block (restored after it).

    ``openvino_telemetry`` decides consent when a tool initialises it (``OptInChecker.check``) and checks the stored
    ``consent`` before each event. Inside the block the check answers "declined" and an already initialised telemetry
    object holds ``consent = False``; both are put back on exit. Nothing on disk is read or written.
    Without ``openvino_telemetry`` installed the block does nothing.
    """
    try:
        from openvino_telemetry import Telemetry
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:
        yield
        return
    check = OptInChecker.__dict__["check"]
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED
    # the singleton the package's metaclass keeps (None until a tool first initialises it)
    instance = getattr(Telemetry, "_SingletonMetaClass__single_instance", None)
    had_consent = getattr(instance, "consent", None)
    if had_consent is not None:
        instance.consent = False
    try:
        yield
    finally:
        OptInChecker.check = check
        if had_consent is not None:
            instance.consent = had_consent


def check_precision(precision: str) -> str:
    """``precision`` if it is one of ``PRECISIONS``.

    Raises:
        ValueError: any other value (the message lists the accepted ones).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown OpenVINO inference precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    return precision


def convert_onnx(onnx_path: PathLike):
    """Read an ONNX file into an OpenVINO model.

    Args:
        onnx_path: a single-graph ONNX file (as ``hf-lnorm export`` writes); its input shapes stay dynamic.

    Returns:
        (openvino.Model): the converted model, float32 weights.

    Raises:
        FileNotFoundError: ``onnx_path`` does not exist.
        ImportError: OpenVINO is not installed.
    """
    ov = _openvino()
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
    with telemetry_off():
        return ov.convert_model(str(path))


def plugin_default_precision() -> str:
    """The CPU plugin's own inference precision on this machine (``"bf16"`` on CPUs with bf16 instructions)."""
    ov = _openvino()
    value = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    return value.to_string() if hasattr(value, "to_string") else str(value)


def compile_config(threads: int, precision: str = "default", extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """CPU plugin options for latency: ``threads`` threads, one stream, and the inference precision.

    Args:
        threads: ``INFERENCE_NUM_THREADS`` (0: the plugin's choice, all cores).
        precision: ``"default"`` (the plugin's choice, written out explicitly), ``"bf16"`` or ``"f32"``.
        extra: further CPU plugin properties (they override the ones above).

    Returns:
        A dict for ``openvino.Core.compile_model(model, "CPU", config)``.

    Raises:
        ValueError: unknown ``precision``.

    Examples:
        >>> compile_config(2, "f32")["INFERENCE_PRECISION_HINT"]
        'f32'
    """
    check_precision(precision)
    resolved = plugin_default_precision() if precision == "default" else precision
    config: Dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_PRECISION_HINT": resolved,
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(int(threads))
    config.update(extra or {})
    return config


class OpenVINORunner:
    """Runs an OpenVINO model on numpy feeds, on CPU.

    With ``static=True`` the model is reshaped to each new input shape and compiled for it on the first call with
    that shape (kept for later calls); otherwise the dynamic model is compiled once. Outputs are copied out of the
    request's buffers, float32.

    Args:
        model (openvino.Model): the model (not modified: static shapes are set on copies).
        output_names: the outputs to return, in order.
        threads: CPU threads (``compile_config``).
        precision: ``"default"``, ``"bf16"`` or ``"f32"``.
        static: one static-shape compile per input shape.
        extra_config: further CPU plugin properties.

    Attributes:
        config: the compile options used.
        compiled_shapes: the input shapes compiled so far (``None`` for the dynamic compile).
        model: the model it runs.
    """

    def __init__(self, model, output_names: Sequence[str], threads: int = 0, precision: str = "default",
                 static: bool = True, extra_config: Optional[Mapping[str, Any]] = None):
        ov = _openvino()
        self._core = ov.Core()
        self._model = model
        self.static = static
        self.config = compile_config(threads, precision, extra_config)
        self.input_names = [p.get_any_name() for p in model.inputs]
        self.output_names = tuple(output_names)
        missing = [n for n in self.output_names if not any(n in o.get_names() for o in model.outputs)]
        if missing:
            have = [o.get_any_name() for o in model.outputs]
            raise ValueError(f"the OpenVINO model has no output {missing[0]!r}; its outputs: {', '.join(have)}")
        self._compiled: Dict[Any, Tuple[Any, Any, List[Any]]] = {}

    @property
    def compiled_shapes(self) -> List[Any]:
        return list(self._compiled)

    @property
    def model(self):
        """The ``openvino.Model`` it runs (clone it before changing it)."""
        return self._model

    def _request(self, feed: Mapping[str, np.ndarray]):
        key = tuple(tuple(feed[n].shape) for n in self.input_names) if self.static else None
        hit = self._compiled.get(key)
        if hit is None:
            model = self._model
            if self.static:
                model = self._model.clone()
                model.reshape({n: list(feed[n].shape) for n in self.input_names})
            compiled = self._core.compile_model(model, "CPU", self.config)
            ports = [compiled.output(n) for n in self.output_names]
            hit = (compiled, compiled.create_infer_request(), ports)
            self._compiled[key] = hit
        return hit

    def __call__(self, feed: Mapping[str, np.ndarray]) -> Tuple[np.ndarray, ...]:
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise ValueError(f"feed lacks model input {missing[0]!r} (the model takes {', '.join(self.input_names)})")
        _, request, ports = self._request(feed)
        result = request.infer({n: np.ascontiguousarray(feed[n]) for n in self.input_names})
        return tuple(np.array(result[p], dtype=np.float32, copy=True) for p in ports)


def calibration_items(feeds: Iterable[Mapping[str, np.ndarray]], batch: int = 1) -> List[Dict[str, np.ndarray]]:
    """Split calibration feeds into items of ``batch`` rows (Optimum Intel calibrates with batch 1).

    Args:
        feeds: dicts of arrays whose first axis is the batch.
        batch: rows per item.

    Returns:
        The items, in order.
    """
    items: List[Dict[str, np.ndarray]] = []
    for feed in feeds:
        n = next(iter(feed.values())).shape[0]
        for i in range(0, n, batch):
            items.append({k: np.ascontiguousarray(v[i : i + batch]) for k, v in feed.items()})
    return items


@dataclass
class Int8Config:
    """What ``quantize_int8`` passes to ``nncf.quantize``.

    The defaults are those of Optimum Intel's ``OVQuantizationConfig()`` (read in optimum-intel 2.2.0,
    ``OVQuantizationConfig.to_nncf_dict``): preset ``mixed`` (``sym=False``), model type ``transformer``, SmoothQuant
    with NNCF's default MatMul alpha (``smooth_quant_alpha=None``: NNCF 3.x uses 0.95), ``subset_size`` 128
    (``num_samples=None``), fast bias correction, overflow fix disabled, no ignored scope.

    Args:
        preset: ``"mixed"`` (symmetric weights, asymmetric activations) or ``"performance"`` (symmetric both).
        smooth_quant_alpha: SmoothQuant strength for MatMul inputs in [0, 1], -1 to turn it off, None for NNCF's default.
        subset_size: calibration items NNCF reads at most.
        fast_bias_correction: NNCF's fast (True) or full bias correction.
        overflow_fix: ``"disable"``, ``"first_layer_only"`` or ``"enable"`` (NNCF ``OverflowFix``).
        ignored_types: OpenVINO op types left in floating point (e.g. ``["MVN", "Softmax"]``).
        ignored_names: node names left in floating point.
        model_type: ``"transformer"`` or None.
    """

    preset: str = "mixed"
    smooth_quant_alpha: Optional[float] = None
    subset_size: int = 128
    fast_bias_correction: bool = True
    overflow_fix: str = "disable"
    ignored_types: List[str] = field(default_factory=list)
    ignored_names: List[str] = field(default_factory=list)
    model_type: Optional[str] = "transformer"

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown NNCF preset {self.preset!r}; accepted: {', '.join(PRESETS)}")
        alpha = self.smooth_quant_alpha
        if alpha is not None and alpha != -1 and not 0 <= alpha <= 1:
            raise ValueError(f"SmoothQuant alpha {alpha!r} is out of range; accepted: a value in [0, 1], -1 (off) or None")
        if not isinstance(self.subset_size, int) or self.subset_size < 1:
            raise ValueError(f"subset_size must be a positive integer, got {self.subset_size!r}")

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form (for reports)."""
        return asdict(self)

    def nncf_kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of ``nncf.quantize``."""
        nncf = _nncf()
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix(self.overflow_fix))
        if self.smooth_quant_alpha is not None:
            advanced.smooth_quant_alphas.matmul = self.smooth_quant_alpha
        ignored = None
        if self.ignored_types or self.ignored_names:
            ignored = nncf.IgnoredScope(types=list(self.ignored_types), names=list(self.ignored_names), validate=False)
        return {
            "preset": nncf.QuantizationPreset(self.preset),
            "model_type": nncf.ModelType(self.model_type) if self.model_type else None,
            "subset_size": self.subset_size,
            "fast_bias_correction": self.fast_bias_correction,
            "ignored_scope": ignored,
            "advanced_parameters": advanced,
        }


def activation_matmuls(model) -> List[str]:
    """Names of the MatMuls whose inputs are both activations (attention's Q.K and P.V in a transformer).

    Pass them as ``Int8Config(ignored_names=...)`` to keep attention's core in floating point while the
    weighted MatMuls (projections, FFN) run in int8.

    Args:
        model (openvino.Model): a float model.

    Returns:
        The MatMul node names, in graph order.
    """
    weight_sources = ("Constant", "Convert")
    return [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "MatMul"
            and not any(i.get_source_output().get_node().get_type_name() in weight_sources for i in op.inputs())]


def quantize_int8(model, feeds: Sequence[Mapping[str, np.ndarray]], config: Optional[Int8Config] = None):
    """Post-training int8 (weights and activations) with ``nncf.quantize`` on calibration feeds.

    Args:
        model (openvino.Model): the float model (dynamic shapes are fine; it is not modified).
        feeds: calibration inputs, one dict of arrays per item, keys a superset of the model's inputs.
        config: NNCF settings; default ``Int8Config()`` (Optimum Intel's defaults).

    Returns:
        (openvino.Model): the quantized model (FakeQuantize nodes the CPU plugin runs as int8).

    Raises:
        ValueError: no calibration feeds.
        ImportError: NNCF is not installed.
    """
    if not feeds:
        raise ValueError("int8 quantization needs calibration feeds; none were given")
    nncf = _nncf()
    config = config or Int8Config()
    names = [p.get_any_name() for p in model.inputs]
    dataset = nncf.Dataset(list(feeds), lambda item: {n: item[n] for n in names})
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)  # NNCF's INFO lines would fill the job's output
    try:
        # NNCF draws its progress bars on stdout (rich), which belongs to the caller's output
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), telemetry_off():
            return nncf.quantize(model.clone(), dataset, **config.nncf_kwargs())
    finally:
        nncf_logger.setLevel(level)


def trim_padding(model, seq_outputs: Sequence[str], fill: float = PAD_FILL):
    """A copy of ``model`` that computes only up to the last real token of each batch.

    Inputs padded to a fixed length (SQuAD-style preprocessing pads every question to 384 tokens) spend most of
    their time on padding. The returned model reads ``attention_mask``, finds the last position that holds a real
    token in any row of the batch, slices every ``[batch, seq]`` input to that length, runs the original graph on it,
    and pads each output in ``seq_outputs`` back to the input length with ``fill``. Inputs, outputs, names and
    dynamic shapes are those of ``model``, so a folder saved from it loads as the original would (Optimum Intel's
    ``OVModelFor*`` classes included).

    For an encoder whose attention masks padded keys (BERT and its relatives) the outputs at real tokens are the full
    model's up to float rounding; check a model with ``padding_trim_error`` (a model that mixes tokens along the
    sequence in other ways, a convolution for instance, is not exact). Positions past the last real token of the
    batch hold ``fill``; positions of a shorter row that are before it hold what the full model computes there.
    Nothing is gained on inputs without trailing padding (tokenized with ``padding="longest"``, or a batch whose
    longest row fills the length).

    Args:
        model (openvino.Model): a model with an ``attention_mask`` input; it is not modified.
        seq_outputs: the outputs whose second axis is the sequence (``start_logits``/``end_logits`` for question
            answering, ``logits`` for token classification); other outputs (a sequence classifier's) are left as
            they are.
        fill: the value written at the skipped positions of ``seq_outputs`` (default ``PAD_FILL``, a logit that
            never wins).

    Returns:
        (openvino.Model): the trimming copy.

    Raises:
        ValueError: no ``attention_mask`` input, an input that is not ``[batch, seq]``, or a name in
            ``seq_outputs`` the model does not have.
    """
    _openvino()
    import openvino.opset13 as ops

    def const(values, dtype=np.int64):
        return ops.constant(np.array(values, dtype))

    model = model.clone()
    params = {p.output(0).get_any_name(): p for p in model.get_parameters()}
    if "attention_mask" not in params:
        raise ValueError(f"trim_padding needs an attention_mask input; the model takes {', '.join(params)}")
    for name, param in params.items():
        rank = param.get_partial_shape().rank
        if rank.is_dynamic or rank.get_length() != 2:
            raise ValueError(f"trim_padding slices [batch, seq] inputs; input {name!r} has shape {param.get_partial_shape()}")
    results = {r.input(0).get_source_output().get_any_name(): r for r in model.get_results()}
    unknown = [n for n in seq_outputs if n not in results]
    if unknown:
        raise ValueError(f"the model has no output {unknown[0]!r}; its outputs: {', '.join(results)}")
    consumers = {n: list(p.output(0).get_target_inputs()) for n, p in params.items()}

    mask = ops.convert(params["attention_mask"], "i64")
    seq = ops.gather(ops.shape_of(mask, "i64"), const([1]), const(0))  # [1]
    real = ops.convert(ops.not_equal(ops.reduce_max(mask, const([0]), False), const(0)), "i64")  # [seq]: any row real
    positions = ops.range(const(1), ops.add(ops.squeeze(seq, const([0])), const(1)), const(1), "i64")  # 1..seq
    keep = ops.maximum(ops.reduce_max(ops.multiply(real, positions), const([0]), True), const([1]))  # [1], >= 1
    for name, param in params.items():
        sliced = ops.slice(param, const([0]), keep, const([1]), const([1]))
        for target in consumers[name]:
            target.replace_source_output(sliced.output(0))
    skipped = ops.subtract(seq, keep)
    for name in seq_outputs:
        result = results[name]
        source = result.input(0).get_source_output()
        rank = source.get_partial_shape().rank.get_length()
        pads_end = ops.concat([const([0]), skipped] + ([const([0] * (rank - 2))] if rank > 2 else []), 0)
        padded = ops.pad(source, const([0] * rank), pads_end, "constant",
                         ops.constant(np.array(fill, source.get_element_type().to_dtype())))
        padded.output(0).set_names(source.get_names())
        source.set_names(set())
        result.input(0).replace_source_output(padded.output(0))
    model.validate_nodes_and_infer_types()
    return model


def padding_trim_error(full, trimmed, feeds: Sequence[Mapping[str, np.ndarray]], output_names: Sequence[str],
                       threads: int = 0) -> float:
    """Max |trimmed - full| at real tokens (f32 inference) over ``feeds``; outputs without a sequence axis compare
    whole.

    Args:
        full (openvino.Model): a model.
        trimmed (openvino.Model): its ``trim_padding`` copy.
        feeds: inputs with an ``attention_mask`` (padded ones show whether trimming is exact).
        output_names: the outputs to compare.
        threads: CPU threads.
    """
    from .trimming import real_token_error

    a = OpenVINORunner(full, output_names, threads=threads, precision="f32", static=False)
    b = OpenVINORunner(trimmed, output_names, threads=threads, precision="f32", static=False)
    return max(real_token_error(a(feed), b(feed), feed["attention_mask"]) for feed in feeds)


def save_ir(model, folder: PathLike, hf_config=None) -> Path:
    """Write ``openvino_model.xml`` / ``.bin`` (float weights kept float32) and ``config.json`` into ``folder``.

    That is the layout ``optimum.intel.OVModelForQuestionAnswering.from_pretrained(folder)`` (and the other
    ``OVModelFor*`` classes) read; plain OpenVINO reads it with ``openvino.Core().read_model(folder/openvino_model.xml)``.

    Args:
        model (openvino.Model): the model; a static-shape copy is never saved by the routes (the saved model keeps
            the dynamic batch and sequence axes).
        folder: an existing folder (the caller stages it).
        hf_config: the transformers config to write as ``config.json`` (skipped when None).

    Returns:
        The path of the XML file.
    """
    ov = _openvino()
    folder = Path(folder)
    xml = folder / OV_XML
    ov.save_model(model, str(xml), compress_to_fp16=False)
    if hf_config is not None:
        hf_config.save_pretrained(folder)
    return xml


def verify_openvino(model, xml_path: PathLike, task: str, inputs=None, threads: int = 0) -> float:
    """Max |OpenVINO (f32) - PyTorch| over the task's outputs on fresh inputs.

    Args:
        model (torch.nn.Module): the PyTorch model that was exported.
        xml_path: the saved ``openvino_model.xml``.
        task: the export task (selects the outputs, ``hf_lnorm.export.TASKS``).
        inputs: optional torch inputs; default ``dummy_inputs(model, task, batch=3, seq=11, seed=1)``.
        threads: CPU threads.

    Returns:
        The largest absolute difference.
    """
    import torch

    from .onnx_trace import TASKS, dummy_inputs

    ov = _openvino()
    ov_model = ov.Core().read_model(str(xml_path))
    if inputs is None:
        inputs = dummy_inputs(model, task, batch=3, seq=11, seed=1)
    names = [p.get_any_name() for p in ov_model.inputs]
    wanted = [n for n in TASKS[task][1] if any(n in o.get_names() for o in ov_model.outputs)]
    if not wanted:
        raise ValueError(f"the OpenVINO model has none of the {task} outputs {', '.join(TASKS[task][1])}")
    run = OpenVINORunner(ov_model, wanted, threads=threads, precision="f32", static=False)
    got = run({n: inputs[n].numpy() for n in names})
    with torch.inference_mode():
        ref = model(**{n: inputs[n] for n in names}, return_dict=True)
    return float(max(np.abs(g - ref[n].float().numpy()).max() for g, n in zip(got, wanted)))
