"""ONNX export of Hugging Face models (patched or not, hf_lnorm families included): the implementation
behind ``hf_lnorm.export`` (import the names from there).

``export(model, output)`` writes an ONNX model that ONNX Runtime, Optimum's
``ORTModelFor*`` classes and TensorRT can load:

* transformers 4.57 with optimum-onnx installed: Optimum's exporter
  (``onnx_export_from_model``, the in-memory twin of ``main_export``), so a
  model patched by ``hf_lnorm.patch`` is exported as patched; hf_lnorm's own
  families pass their ONNX configs as ``custom_onnx_configs``.
* transformers 5.x (optimum-onnx requires < 4.58): ``torch.onnx.export`` with
  the dynamo exporter and the same input/output names and dynamic axes.

No export context is needed: patched norms and fused residual blocks see that an
ONNX export is recording them (``hf_lnorm.norms.fused.tracing``) and record
``F.layer_norm`` with constant normalized sizes (the standard
``LayerNormalization`` op, opset >= 17) and the RMS conventions as elementary
ops, so the graph stays free of custom ops; nothing outside the exported call
changes, so other models in the process run as they did.

The graph inputs of a task and the two exporters live in ``onnx_trace.py``; this
module resolves the model, runs one of them, verifies and stages the output.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from ..loading import ModelNotFoundError, resolve_model
from ..errors import UnsupportedArchitectureError
from ..outputs import OutputExistsError, UnsafeOutputError, check_output_dir, staged_output_dir
from . import seq2seq as _seq2seq
from . import speech as _speech  # noqa: F401  (registers the lnorm-speech export spec)
from .families import family_of as _family_of
from .graph_inspect import MIN_OPSET, onnx_op_types, onnx_opset, standard_op_problems
# re-exported: hf_lnorm.export.onnx is where ``export`` looks these up (tests replace the exporters here)
from .onnx_trace import (  # noqa: F401
    TASKS,
    _NamedOutputs,
    _export_dynamo,
    _export_optimum,
    _output_axes,
    _text_input_names,
    _vision_text,
    dummy_inputs,
    input_spec,
    onnx_files_in,
)
from .seq2seq_runtime import verify as _verify_family

logger = logging.getLogger("hf_lnorm")

DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18  # the dynamo exporter emits opset-18 forms (e.g. Split with num_outputs)
TARGETS = ("onnx", "tensorrt", "openvino")
METHOD_OPTIMUM = "optimum"
METHOD_DYNAMO = "torch.onnx-dynamo"

# class-name suffix -> task, first match wins
_CLASS_SUFFIX_TASKS = (
    ("ForQuestionAnswering", "question-answering"),
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("SpeechForConditionalGeneration", "automatic-speech-recognition"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("ForSeq2SeqLM", "text2text-generation"),
    ("ForImageClassification", "image-classification"),
    ("PolicyModel", "reinforcement-learning"),
    ("VisionTextForClassification", "visual-question-answering"),
    ("Model", "feature-extraction"),
)


@dataclass
class ExportResult:
    """What ``export`` wrote and how it checked it.

    ``hf-lnorm export`` prints these fields; ``ExportResult`` objects are
    returned by ``export``, not built by hand.

    Args:
        output_dir: the final output directory.
        onnx_files: ONNX files written, relative to ``output_dir``.
        method: ``"optimum"`` or ``"torch.onnx-dynamo"``.
        task: the export task.
        opset: default-domain opset of the written graph(s).
        target: ``"onnx"``, ``"tensorrt"`` or ``"openvino"``.
        op_types: per file, a ``Counter`` of ``"domain::OpType"`` (``""`` domain shown bare).
        max_abs_err: largest |ONNX Runtime - PyTorch| over all outputs on fresh inputs (fp32).
        notes: human-readable lines (path taken, opset adjustments, TensorRT status).

    Examples:
        ```python
        from hf_lnorm.export import export

        result = export("path/to/bert-qa", "bert-qa-onnx", task="question-answering")
        print(result.method, result.opset, result.onnx_files)  # e.g. optimum 18 ['model.onnx']
        print(result.op_types["model.onnx"]["LayerNormalization"])  # one node per norm
        print(f"max |ORT - PyTorch| = {result.max_abs_err:.1e}")
        ```
    """

    output_dir: Path
    onnx_files: List[str]
    method: str
    task: str
    opset: int
    target: str = "onnx"
    op_types: Dict[str, Counter] = field(default_factory=dict)
    max_abs_err: Optional[float] = None
    notes: List[str] = field(default_factory=list)


# --------------------------------------------------------------------------- environment


def optimum_available() -> bool:
    """Whether Optimum's ONNX exporter can run here (optimum-onnx installed, transformers < 4.58).

    The package is located without importing it.

    Returns:
        True when ``optimum.exporters.onnx`` can be found.

    Examples:
        >>> from hf_lnorm.export import default_method, optimum_available
        >>> default_method() == ("optimum" if optimum_available() else "torch.onnx-dynamo")
        True
    """
    if importlib.util.find_spec("optimum") is None or importlib.util.find_spec("optimum.exporters") is None:
        return False
    try:
        return importlib.util.find_spec("optimum.exporters.onnx") is not None
    except (ImportError, ValueError):
        return False


def default_method() -> str:
    """The export method ``export`` uses when none is given.

    Returns:
        ``"optimum"`` where Optimum's exporter is installed (``optimum_available``),
            else ``"torch.onnx-dynamo"``.

    Examples:
        >>> from hf_lnorm.export import default_method
        >>> default_method() in ("optimum", "torch.onnx-dynamo")
        True
    """
    return METHOD_OPTIMUM if optimum_available() else METHOD_DYNAMO


# --------------------------------------------------------------------------- model resolution


def infer_task(model_or_class) -> str:
    """Export task of a model from its class name (``BertForQuestionAnswering`` -> ``question-answering``).

    The first matching class-name suffix wins (``ForQuestionAnswering``,
    ``ForSequenceClassification``, ``ForCausalLM``, ``LMHeadModel``, ...); a
    bare ``...Model`` is ``feature-extraction``.

    Args:
        model_or_class (torch.nn.Module | type | str): a model, a model class, or a class name
            (as in ``config.architectures``).

    Returns:
        A key of ``TASKS``.

    Raises:
        UnsupportedArchitectureError: no known task for that class.

    Examples:
        >>> from hf_lnorm.export import infer_task
        >>> infer_task("BertForQuestionAnswering"), infer_task("GPT2LMHeadModel"), infer_task("BertModel")
        ('question-answering', 'text-generation', 'feature-extraction')
    """
    cls = model_or_class if isinstance(model_or_class, type) else type(model_or_class)
    name = cls.__name__ if isinstance(model_or_class, (type, torch.nn.Module)) else str(model_or_class)
    for suffix, task in _CLASS_SUFFIX_TASKS:
        if name.endswith(suffix):
            return task
    raise UnsupportedArchitectureError(
        f"unsupported architecture {name!r}: no export task is known for it (accepted tasks: {', '.join(TASKS)})"
    )


def load_model(name: str, task: Optional[str] = None, trust_remote_code: bool = False):
    """Load a model for export from a directory or hub id.

    The folder or hub id is resolved first (``hf_lnorm.loading.resolve_model``
    with ``check_hub=True``), so a wrong reference fails with one line. The
    model is not patched here (``export`` does that).

    Args:
        name: local directory or hub id.
        task: one of ``TASKS``; default: inferred from ``config.architectures``
            (``feature-extraction`` when the config names none).
        trust_remote_code: passed to ``from_pretrained``.

    Returns:
        (tuple[transformers.PreTrainedModel, str]): ``(model, task)``, the model in eval mode, fp32.

    Raises:
        ModelNotFoundError: the folder or hub id cannot be resolved.
        UnsupportedArchitectureError: the task's Auto class cannot load the architecture.
        ValueError: unknown task.

    Examples:
        ```python
        from hf_lnorm.export import load_model

        model, task = load_model("path/to/bert-qa")  # task inferred: "question-answering"
        ```
    """
    import transformers
    from transformers import AutoConfig

    source = resolve_model(name, check_hub=True)
    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    if task is None:
        archs = getattr(config, "architectures", None) or []
        task = infer_task(archs[0]) if archs else "feature-extraction"
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; accepted tasks: {', '.join(TASKS)}")
    auto_cls = getattr(transformers, TASKS[task][0])
    try:
        model = auto_cls.from_pretrained(source, trust_remote_code=trust_remote_code, torch_dtype=torch.float32)
    except ValueError as exc:
        arch = (getattr(config, "architectures", None) or [type(config).__name__])[0]
        raise UnsupportedArchitectureError(
            f"unsupported architecture {arch!r} (model_type {config.model_type!r}) for task {task!r}: {str(exc).splitlines()[0][:200]}"
        ) from None
    return model.eval(), task


# --------------------------------------------------------------------------- verification


def _to_numpy(inputs: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in inputs.items()}


def verify_onnx(model, onnx_path: Union[str, Path], task: str, inputs: Optional[Dict[str, torch.Tensor]] = None) -> float:
    """Max |ONNX Runtime - PyTorch| over all named outputs on fresh inputs (another batch/sequence size).

    Runs the graph in ONNX Runtime on CPU and the model in PyTorch on the same
    inputs, and compares the task's outputs (``TASKS[task][1]``). Past key
    values the graph expects are fed as empty caches.

    Args:
        model (torch.nn.Module): the PyTorch model that was exported (patched or not).
        onnx_path: a single-graph ONNX file (no past key values).
        task: the export task (selects the outputs).
        inputs: optional inputs; default: ``dummy_inputs(model, task, batch=3, seq=11, seed=1)``.

    Returns:
        The largest absolute difference.

    Examples:
        ```python
        from hf_lnorm.export import export, verify_onnx

        result = export(model, "model-onnx", task="question-answering", verify=False)
        err = verify_onnx(model, result.output_dir / "model.onnx", "question-answering")
        ```
    """
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed_names = {i.name for i in sess.get_inputs()}
    if inputs is None:
        inputs = dummy_inputs(model, task, batch=3, seq=11, seed=1)
    inputs = {k: v for k, v in inputs.items() if k in feed_names}
    feed = _to_numpy(inputs)
    batch = next(iter(inputs.values())).shape[0]
    for node in sess.get_inputs():
        if node.name not in feed and node.name.startswith("past_key_values."):
            # an empty cache: (batch, heads, 0, head_dim), the first step of generation
            dims = [d if isinstance(d, int) else 0 for d in node.shape]
            dims[0] = batch
            feed[node.name] = np.zeros(dims, dtype=np.float32)
    outs = [o.name for o in sess.get_outputs()]
    got = dict(zip(outs, sess.run(outs, feed)))
    extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    with torch.inference_mode():
        ref = model(**inputs, **extra, return_dict=True)
    err = 0.0
    for name in TASKS[task][1]:
        if name in got and getattr(ref, name, None) is not None:
            err = max(err, float(np.abs(got[name] - ref[name].float().numpy()).max()))
    return err


# --------------------------------------------------------------------------- export


def _save_side_files(model, source: Optional[str], out_dir: Path) -> None:
    """config.json and the preprocessor (tokenizer / image processor) next to the ONNX file(s)."""
    if not (out_dir / "config.json").exists():
        model.config.save_pretrained(out_dir)
    if source is None:
        return
    from transformers import AutoImageProcessor, AutoTokenizer

    for loader in (AutoTokenizer, AutoImageProcessor):
        try:
            loader.from_pretrained(source).save_pretrained(out_dir)
            break
        except Exception:  # no such preprocessor in that folder: nothing to copy
            continue


def family_onnx_configs(model, task: str):
    """What Optimum's exporter needs for hf_lnorm's own families.

    Args:
        model (torch.nn.Module): the model to export.
        task: the export task.

    Returns:
        (tuple): ``(custom_onnx_configs, fn_get_submodels)`` for hf_lnorm's own families,
            ``(None, None)`` for other models or where Optimum is not installed.
    """
    try:
        from .onnx_configs import custom_configs_for
    except ImportError:  # pragma: no cover - needs optimum
        return None, None
    return custom_configs_for(model, task)


def _local_model_dirs(model) -> List[str]:
    """The local folders ``model`` comes from (a path argument, or a loaded model's ``name_or_path``)."""
    if isinstance(model, (str, os.PathLike)):
        candidates = [os.fspath(model)]
    else:
        config = getattr(model, "config", None)
        candidates = [getattr(model, "name_or_path", None), getattr(config, "_name_or_path", None)]
    return [os.path.expanduser(c) for c in candidates if isinstance(c, str) and c and os.path.isdir(os.path.expanduser(c))]


def export(
    model: Union[str, "torch.nn.Module"],
    output: Union[str, Path],
    task: Optional[str] = None,
    opset: int = DEFAULT_OPSET,
    target: str = "onnx",
    overwrite: bool = False,
    method: Optional[str] = None,
    patch: bool = True,
    verify: bool = True,
    trust_remote_code: bool = False,
) -> ExportResult:
    """Export a model to ONNX, atomically (a temp dir renamed onto ``output`` at the end).

    Uses Optimum's exporter where optimum-onnx is installed (transformers 4.57)
    and ``torch.onnx.export`` (dynamo) otherwise. Patched norms are written as
    standard ``LayerNormalization`` nodes (the RMS variants as elementary ops),
    so the graph has no custom ops. The output folder also gets ``config.json``
    and, for a model loaded from a folder or hub id, its tokenizer or image
    processor. Encoder-decoder families are written as several graphs
    (encoder, decoder, decoder with past).

    Args:
        model: a ``PreTrainedModel`` (exported as it is, patched or not), a local
            directory or a hub id (loaded, then patched with ``hf_lnorm.patch``
            unless ``patch=False``).
        output: output directory; must not exist unless ``overwrite``.
        task: one of ``TASKS``; default: inferred from the model class.
        opset: ONNX opset, >= 17 (the dynamo path needs >= 18 and raises it).
        target: ``"onnx"``, ``"tensorrt"`` (standard ops only, checked; an engine
            is built where the ``tensorrt`` package and a CUDA GPU are present,
            otherwise the notes give the ``trtexec`` command; the engine-building
            path is not covered by the test suite) or ``"openvino"`` (the ONNX file
            converted to OpenVINO IR, ``openvino_model.xml`` / ``.bin``, written
            beside it and checked in f32 against PyTorch; single-graph models).
        overwrite: replace an existing ``output``.
        method: ``"optimum"`` or ``"torch.onnx-dynamo"``; default: Optimum when installed.
        patch: patch a model loaded from a path/hub id before export.
        verify: compare ONNX Runtime with PyTorch on fresh inputs (single-graph exports, and every graph of
            the encoder-decoder families: export/seq2seq.py).
        trust_remote_code: for loading from a path/hub id.

    Returns:
        An ``ExportResult``.

    Raises:
        ModelNotFoundError: missing path / unknown hub id.
        OutputExistsError: ``output`` is an earlier hf_lnorm output and ``overwrite`` is False.
        UnsafeOutputError: (a subclass) ``output`` may never be replaced: it is the model's folder, holds it
            or the current directory, is a file, or is a folder of files hf_lnorm did not write.
        UnsupportedArchitectureError: the architecture or task cannot be exported.
        ValueError: bad ``task``, ``opset``, ``target`` or ``method``; ``method="optimum"``
            without optimum-onnx; with ``target="tensorrt"``, a graph with non-standard ops.
        TypeError: ``model`` is neither a path, a hub id nor an ``nn.Module``.
        RuntimeError: the exporter wrote no ONNX file.
        ImportError: ``target="openvino"`` without OpenVINO installed.

    Examples:
        ```python
        import hf_lnorm
        from hf_lnorm.export import export
        from transformers import AutoModelForQuestionAnswering

        # from a folder or hub id: loaded, patched, exported, verified
        result = export("path/to/bert-qa", "bert-qa-onnx", task="question-answering")

        # or a model you already hold (exported as it is, patched or not)
        model = hf_lnorm.patch(AutoModelForQuestionAnswering.from_pretrained("path/to/bert-qa"))
        result = export(model, "bert-qa-onnx", overwrite=True)
        print(result.notes)
        ```
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; accepted targets: {', '.join(TARGETS)}")
    if target == "openvino" and importlib.util.find_spec("openvino") is None:
        raise ImportError('target "openvino" needs OpenVINO: pip install "hf-lnorm[openvino]"')
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset {opset!r} is too old: LayerNormalization needs opset >= {MIN_OPSET}")
    method = method or default_method()
    if method not in (METHOD_OPTIMUM, METHOD_DYNAMO):
        raise ValueError(f"unknown export method {method!r}; accepted: {METHOD_OPTIMUM}, {METHOD_DYNAMO}")
    if method == METHOD_OPTIMUM and not optimum_available():
        raise ValueError("method 'optimum' needs optimum-onnx (installable with transformers < 4.58 only)")
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; accepted tasks: {', '.join(TASKS)}")
    protect = _local_model_dirs(model)
    check_output_dir(output, overwrite, protect)

    source = None
    if isinstance(model, (str, os.PathLike)):
        source = str(model)
        model, task = load_model(source, task, trust_remote_code=trust_remote_code)
        if patch:
            import hf_lnorm

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                hf_lnorm.patch(model)
    elif not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a path, a hub id or a PreTrainedModel, got {type(model).__name__}")
    model.eval()
    task = task or infer_task(model)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; accepted tasks: {', '.join(TASKS)}")

    notes = []
    if method == METHOD_DYNAMO and opset < DYNAMO_MIN_OPSET:
        notes.append(f"opset raised from {opset} to {DYNAMO_MIN_OPSET} (the torch.onnx dynamo exporter emits opset-18 ops)")
        opset = DYNAMO_MIN_OPSET
    notes.insert(0, "export path: Optimum ONNX exporter (optimum-onnx)" if method == METHOD_OPTIMUM
                 else "export path: torch.onnx.export (dynamo) — Optimum's exporter is not installed with this transformers")

    family = _family_of(model)  # an encoder-decoder family: several graphs (export/seq2seq.py)
    with staged_output_dir(output, overwrite, protect + _local_model_dirs(model), writer="hf-lnorm export") as tmp:
        if method == METHOD_OPTIMUM:
            configs, submodels = family_onnx_configs(model, task)
            files = _export_optimum(model, tmp, task, opset, configs, submodels)
        else:
            try:
                if family is not None:  # encoder + decoder (+ decoder with past) graphs
                    files = _seq2seq.export_dynamo(family, model, tmp, opset, task=task)
                else:
                    files = _export_dynamo(model, tmp, task, opset, notes)
            except Exception as exc:
                if not type(exc).__module__.startswith("torch"):
                    raise  # not the exporter rejecting the model (OSError, interrupts, our own errors)
                raise UnsupportedArchitectureError(
                    f"torch.onnx (dynamo) could not export architecture {type(model).__name__!r} "
                    f"for task {task!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
                ) from exc
        _save_side_files(model, source, tmp)
        files = onnx_files_in(tmp)
        if not files:
            raise RuntimeError(f"the exporter wrote no ONNX file for {type(model).__name__}")
        result = ExportResult(
            output_dir=Path(output).expanduser().absolute(),
            onnx_files=files,
            method=method,
            task=task,
            opset=onnx_opset(tmp / files[0]),
            target=target,
            op_types={f: onnx_op_types(tmp / f) for f in files},
            notes=notes,
        )
        if verify and files == ["model.onnx"]:
            result.max_abs_err = verify_onnx(model, tmp / "model.onnx", task)
        elif verify and family is not None:
            result.max_abs_err = _verify_family(family, model, tmp)
        if target == "openvino":  # the IR beside the ONNX file: openvino_model.xml/.bin, verified in f32
            if files != ["model.onnx"]:
                raise UnsupportedArchitectureError(
                    f"target 'openvino' takes single-graph exports; {type(model).__name__} exports as {', '.join(files)}")
            from .openvino import convert_onnx, save_ir, verify_openvino

            xml = save_ir(convert_onnx(tmp / "model.onnx"), tmp)
            result.notes.append(f"OpenVINO IR: {xml.name} + {xml.with_suffix('.bin').name} (float32 weights); load with "
                                "OVModelForQuestionAnswering.from_pretrained(OUT) or openvino.Core().read_model(OUT/openvino_model.xml)"
                                if task == "question-answering" else
                                f"OpenVINO IR: {xml.name} + {xml.with_suffix('.bin').name} (float32 weights); load with "
                                "openvino.Core().read_model(OUT/openvino_model.xml)")
            if verify:
                err = verify_openvino(model, xml, task)
                result.notes.append(f"OpenVINO (f32) vs PyTorch (fresh inputs): max |err| {err:.2e}")
        if target == "tensorrt":
            from .tensorrt import prepare_tensorrt

            if family is not None:  # each graph's own inputs (decoders: encoder states, past), up to the position table
                max_seq = getattr(model.config, "max_position_embeddings", None) or 512
                result.notes.extend(prepare_tensorrt(tmp, files, max_seq=max_seq))
            else:
                result.notes.extend(prepare_tensorrt(tmp, files, input_spec_for_trt(model, task)))
    return result


def input_spec_for_trt(model, task: str) -> Dict[str, Tuple[int, ...]]:
    """Per input, a representative full shape (batch 1, sequence 128 / image size) for TensorRT profiles."""
    if task == "image-classification":
        cfg = model.config
        size = getattr(cfg, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        return {"pixel_values": (1, getattr(cfg, "num_channels", 3), size, size)}
    if task == "reinforcement-learning":
        return {"observations": (1, model.config.observation_size)}
    if _vision_text(model, task):
        cfg = model.config
        length = min(128, getattr(cfg, "max_position_embeddings", 128))
        return {"pixel_values": (1, cfg.num_channels, cfg.image_size, cfg.image_size), "input_ids": (1, length), "attention_mask": (1, length)}
    try:
        names = list(input_spec(model, task))
    except UnsupportedArchitectureError:
        names = _text_input_names(model, task)
    return {n: (1, 128) for n in names}

