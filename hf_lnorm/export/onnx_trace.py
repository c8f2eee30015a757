"""Graph inputs of an export task and the two ONNX exporters (Optimum's, torch.onnx's).

``hf_lnorm.export.onnx.export`` picks one of ``_export_optimum`` and ``_export_dynamo``
(the latter falls back to torch.onnx's TorchScript exporter where ``torch.export``
cannot trace the model); both write into a staging directory that ``export`` owns.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import torch

from ..errors import UnsupportedArchitectureError


# task -> (Auto class name, output names). Output names follow Optimum's ONNX configs.
TASKS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "feature-extraction": ("AutoModel", ("last_hidden_state",)),
    "fill-mask": ("AutoModelForMaskedLM", ("logits",)),
    "text-classification": ("AutoModelForSequenceClassification", ("logits",)),
    "token-classification": ("AutoModelForTokenClassification", ("logits",)),
    "question-answering": ("AutoModelForQuestionAnswering", ("start_logits", "end_logits")),
    "text-generation": ("AutoModelForCausalLM", ("logits",)),
    "text-generation-with-past": ("AutoModelForCausalLM", ("logits",)),
    "text2text-generation": ("AutoModelForSeq2SeqLM", ("logits",)),
    "text2text-generation-with-past": ("AutoModelForSeq2SeqLM", ("logits",)),
    "image-classification": ("AutoModelForImageClassification", ("logits",)),
    # LNormPolicy: observations -> action-distribution logits and state value (Optimum's task name)
    "reinforcement-learning": ("AutoModel", ("logits", "value")),
    # LNormVisionText: image + question -> answer logits (transformers' AutoModelForVisualQuestionAnswering)
    "visual-question-answering": ("AutoModelForVisualQuestionAnswering", ("logits",)),
    # LNormSpeech: encoder + decoder graphs (export/speech.py)
    "automatic-speech-recognition": ("AutoModelForSpeechSeq2Seq", ("logits",)),
    "automatic-speech-recognition-with-past": ("AutoModelForSpeechSeq2Seq", ("logits",)),
}
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# --------------------------------------------------------------------------- graph inputs


def _text_input_names(model, task: str) -> List[str]:
    params = inspect.signature(model.forward).parameters
    names = [n for n in _TEXT_INPUTS if n in params]
    if "token_type_ids" in names and not getattr(model.config, "type_vocab_size", 0):
        names.remove("token_type_ids")
    if task.startswith("text-generation"):
        if "token_type_ids" in names:
            names.remove("token_type_ids")
        if "position_ids" in params:  # Optimum's decoder configs take explicit positions
            names.append("position_ids")
    return names


def _image_features(model, task: str) -> bool:
    """Feature extraction from an image encoder (e.g. ``LNormViTModel``): inputs are ``pixel_values``."""
    return task == "feature-extraction" and getattr(model, "main_input_name", None) == "pixel_values"


def _vision_text(model, task: str) -> bool:
    """An image + text model (config with ``vision_config`` and ``text_config``, e.g. LNormVisionText)."""
    cfg = model.config
    both = getattr(cfg, "vision_config", None) is not None and getattr(cfg, "text_config", None) is not None
    return task == "visual-question-answering" or (task == "feature-extraction" and both)


def input_spec(model, task: str) -> Dict[str, Dict[int, str]]:
    """Input names and dynamic axes for ``task``, as Optimum's ONNX configs name them."""
    if _vision_text(model, task):
        text_axes = {0: "batch_size", 1: "sequence_length"}
        return {"pixel_values": {0: "batch_size"}, "input_ids": dict(text_axes), "attention_mask": dict(text_axes)}
    if task == "image-classification" or _image_features(model, task):
        return {"pixel_values": {0: "batch_size"}}
    if task == "reinforcement-learning":
        return {"observations": {0: "batch_size"}}
    if task.endswith("-with-past"):
        raise UnsupportedArchitectureError(
            f"task {task!r} for {type(model).__name__} needs Optimum's past-key-values export (transformers 4.57 with "
            "optimum-onnx); the torch.onnx path exports the graph without a cache (task 'text-generation')"
        )
    if task.startswith("text2text"):
        raise UnsupportedArchitectureError(
            f"task {task!r} for {type(model).__name__} needs Optimum's encoder/decoder split; "
            "the torch.onnx path exports single-graph tasks only"
        )
    return {n: {0: "batch_size", 1: "sequence_length"} for n in _text_input_names(model, task)}


def dummy_inputs(model, task: str, batch: int = 2, seq: int = 13, seed: int = 0, pad: bool = True) -> Dict[str, torch.Tensor]:
    """Random but valid inputs for ``model`` and ``task`` (right padding on the last row).

    Token ids avoid the lowest ids (special tokens); the last row's attention
    mask has its final three positions padded, so padding is exercised. Image,
    policy and vision-text models get pixel values and observations at their
    config sizes.

    Args:
        model (torch.nn.Module): the model (its ``config`` sets vocabulary, image size, ...).
        task: a key of ``TASKS`` (selects the inputs).
        batch: batch size.
        seq: sequence length (capped at the model's position table).
        seed: seed of the generator, so the inputs are reproducible.
        pad: pad the last row (with ``batch > 1`` and ``seq > 4``).

    Returns:
        ``{input name: tensor}`` for ``model(**inputs)``.

    Examples:
        >>> from transformers import BertConfig, BertForQuestionAnswering
        >>> from hf_lnorm.export import dummy_inputs
        >>> config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                     num_attention_heads=4, intermediate_size=64)
        >>> inputs = dummy_inputs(BertForQuestionAnswering(config), "question-answering", batch=2, seq=8)
        >>> sorted(inputs), tuple(inputs["input_ids"].shape)
        (['attention_mask', 'input_ids', 'token_type_ids'], (2, 8))
        >>> inputs["attention_mask"][-1].tolist()
        [1, 1, 1, 1, 1, 0, 0, 0]
    """
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    if _vision_text(model, task):  # an image and a (right-padded) question per example
        image = dummy_inputs(model, "image-classification", batch, seq, seed, pad)
        return {**image, **dummy_inputs(model, "text-classification", batch, seq, seed + 1, pad)}
    if task == "image-classification" or _image_features(model, task):
        size = getattr(cfg, "image_size", 32)
        size = size if isinstance(size, int) else size[0]
        return {"pixel_values": torch.randn(batch, getattr(cfg, "num_channels", 3), size, size, generator=gen)}
    if task == "reinforcement-learning":
        return {"observations": torch.randn(batch, cfg.observation_size, generator=gen)}
    maxpos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 512
    seq = min(seq, maxpos)
    vocab = cfg.vocab_size
    out = {}
    for name in _text_input_names(model, task):
        if name == "input_ids":
            out[name] = torch.randint(min(5, vocab - 1), vocab, (batch, seq), generator=gen)
        elif name == "attention_mask":
            mask = torch.ones(batch, seq, dtype=torch.long)
            if pad and batch > 1 and seq > 4:
                mask[-1, seq - 3 :] = 0
            out[name] = mask
        elif name == "token_type_ids":
            tt = torch.zeros(batch, seq, dtype=torch.long)
            tt[:, seq // 2 :] = 1 if getattr(cfg, "type_vocab_size", 1) > 1 else 0
            out[name] = tt
        elif name == "position_ids":
            out[name] = torch.arange(seq).unsqueeze(0).expand(batch, seq).contiguous()
    return out


# --------------------------------------------------------------------------- exporters


def onnx_files_in(directory: Union[str, Path]) -> List[str]:
    """ONNX files under ``directory``, relative paths, sorted."""
    directory = Path(directory)
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*.onnx"))


class _NamedOutputs(torch.nn.Module):
    """Positional inputs -> tuple of named outputs, for ``torch.onnx.export``."""

    def __init__(self, model, input_names: Sequence[str], output_names: Sequence[str]):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    def forward(self, *args):
        kwargs = dict(zip(self.input_names, args))
        extra = {"use_cache": False} if "use_cache" in inspect.signature(self.model.forward).parameters else {}
        out = self.model(**kwargs, **extra, return_dict=True)
        return tuple(out[n] for n in self.output_names)


def _output_axes(task: str) -> Dict[int, str]:
    """Dynamic axes of the outputs: per token for token-level tasks, per example otherwise."""
    if task in ("text-classification", "image-classification", "reinforcement-learning", "visual-question-answering"):
        return {0: "batch_size"}
    return {0: "batch_size", 1: "sequence_length"}


def _export_dynamo(model, out_dir: Path, task: str, opset: int, notes: List[str]) -> List[str]:
    spec = input_spec(model, task)
    names = list(spec)
    inputs = dummy_inputs(model, task, batch=2, seq=16)
    output_names = list(TASKS[task][1])
    wrapper = _NamedOutputs(model, names, output_names).eval()
    dims: Dict[str, torch.export.Dim] = {}
    dynamic_shapes = {}
    for name in names:
        dynamic_shapes[name] = {ax: dims.setdefault(label, torch.export.Dim(label)) for ax, label in spec[name].items()}
    path = out_dir / "model.onnx"

    def run(**shape_options) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, tuple(inputs[n] for n in names), str(path), input_names=names,
                              output_names=output_names, opset_version=opset, verbose=False, **shape_options)

    try:
        run(dynamic_shapes={"args": tuple(dynamic_shapes[n] for n in names)}, dynamo=True, external_data=False)
    except Exception as exc:
        if not type(exc).__module__.startswith("torch"):
            raise
        # torch.export cannot trace data-dependent Python control flow (e.g. "is there any
        # padding?"); torch.onnx's TorchScript exporter records the branch the dummy inputs
        # take, which is the general one here since they include padding.
        path.unlink(missing_ok=True)
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        try:
            run(dynamic_axes={**spec, **{o: _output_axes(task) for o in output_names}}, dynamo=False)
        except Exception:
            raise exc from None
        notes.append(f"torch.onnx dynamo could not trace {type(model).__name__} ({type(exc).__name__}: {reason}); "
                     "used torch.onnx's TorchScript exporter instead")
    return ["model.onnx"]


def _export_optimum(model, out_dir: Path, task: str, opset: int, custom_onnx_configs=None, fn_get_submodels=None) -> List[str]:
    from optimum.exporters.onnx import onnx_export_from_model
    from optimum.exporters.tasks import TasksManager

    model_type = getattr(model.config, "export_model_type", model.config.model_type)
    if custom_onnx_configs is None:
        try:
            supported = TasksManager.get_supported_tasks_for_model_type(model_type, "onnx", library_name="transformers")
        except KeyError:
            raise UnsupportedArchitectureError(
                f"unsupported architecture {type(model).__name__!r}: model_type {model_type!r} has no ONNX config in Optimum "
                "(and hf_lnorm has none for it)"
            ) from None
        if task not in supported:
            raise UnsupportedArchitectureError(
                f"task {task!r} is not supported for model_type {model_type!r} by Optimum's ONNX exporter "
                f"(supported: {', '.join(sorted(supported))})"
            )
    kwargs = dict(opset=opset, task=task, custom_onnx_configs=custom_onnx_configs, fn_get_submodels=fn_get_submodels)
    # verify_onnx checks against the (patched) PyTorch model afterwards; Optimum's own
    # validation would re-run every submodel and double the export time.
    kwargs["do_validation"] = False
    if "library_name" in inspect.signature(onnx_export_from_model).parameters:
        kwargs["library_name"] = "transformers"
    from .onnx_configs import optimum_knows_families

    with warnings.catch_warnings(), optimum_knows_families():
        warnings.simplefilter("ignore")
        onnx_export_from_model(model, out_dir, **kwargs)
    return onnx_files_in(out_dir)
