"""Optimum ONNX configs for hf_lnorm's own model families (``model_type`` ``lnorm-*``).

Optimum's exporter refuses model types it does not know unless it is given
``custom_onnx_configs``; ``custom_configs_for(model, task)`` returns them for
our families, and ``(None, None)`` for every other model (Optimum's own configs apply).

* ``lnorm-gpt`` (GPT-2-shaped decoder): inputs ``input_ids``, ``attention_mask``,
  ``position_ids`` and, with past, ``past_key_values.{i}.key/value``; outputs
  ``logits`` and ``present.{i}.key/value``: what ``ORTModelForCausalLM`` expects.
* ``lnorm-policy`` (actor-critic MLPs), Optimum's ``reinforcement-learning`` task: input
  ``observations (batch, observation_size)``, outputs ``logits`` and ``value``.
* ``lnorm-vit`` (Vision Transformer), tasks ``image-classification`` (output ``logits``) and
  ``feature-extraction`` (``last_hidden_state``, ``pooler_output``): input ``pixel_values``
  with a dynamic batch axis.
* ``lnorm-vision-text`` (image + question fusion), tasks ``visual-question-answering`` (output
  ``logits (batch, num_labels)``) and ``feature-extraction`` (``last_hidden_state``, ``pooler_output``):
  inputs ``pixel_values`` (dynamic batch), ``input_ids`` and ``attention_mask`` (dynamic batch and length).
* ``lnorm-speech`` (speech encoder-decoder), tasks ``automatic-speech-recognition`` (encoder + decoder)
  and ``automatic-speech-recognition-with-past`` (+ decoder with past): configs in ``export/speech.py``.
* ``lnorm-seq2seq`` (text encoder-decoder), tasks ``text2text-generation`` (encoder + decoder) and
  ``text2text-generation-with-past`` (+ decoder with past), Optimum's seq2seq layout and names, and
  ``feature-extraction`` for the bare ``LNormSeq2SeqModel``: configs in ``export/seq2seq.py``.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional, Tuple

FAMILY_PREFIX = "lnorm-"


def _gpt_config_class():
    from optimum.exporters.onnx.config import TextDecoderWithPositionIdsOnnxConfig
    from optimum.utils import NormalizedTextConfig

    class LNormGPTOnnxConfig(TextDecoderWithPositionIdsOnnxConfig):
        """LNormGPT: one decoder graph, with or without past key values."""

        NORMALIZED_CONFIG_CLASS = NormalizedTextConfig
        DEFAULT_ONNX_OPSET = 18
        ATOL_FOR_VALIDATION = 1e-4

    return LNormGPTOnnxConfig


def _policy_config_class():
    from optimum.exporters.onnx.base import OnnxConfig
    from optimum.utils import DummyInputGenerator, NormalizedConfig

    class LNormPolicyObservationGenerator(DummyInputGenerator):
        """Random ``(batch, observation_size)`` float observations."""

        SUPPORTED_INPUT_NAMES = ("observations",)

        def __init__(self, task, normalized_config, batch_size: int = 2, **kwargs):
            self.task = task
            self.batch_size = batch_size
            self.observation_size = normalized_config.config.observation_size

        def generate(self, input_name: str, framework: str = "pt", int_dtype: str = "int64", float_dtype: str = "fp32"):
            shape = [self.batch_size, self.observation_size]
            return self.random_float_tensor(shape, min_value=-2.0, max_value=2.0, framework=framework, dtype=float_dtype)

    class LNormPolicyOnnxConfig(OnnxConfig):
        """LNormPolicy: ``observations (batch, observation_size)`` -> ``logits (batch, action_size)``, ``value (batch,)``."""

        NORMALIZED_CONFIG_CLASS = NormalizedConfig
        DUMMY_INPUT_GENERATOR_CLASSES = (LNormPolicyObservationGenerator,)
        DEFAULT_ONNX_OPSET = 18
        ATOL_FOR_VALIDATION = 1e-4

        @property
        def inputs(self):
            return {"observations": {0: "batch_size"}}

        @property
        def outputs(self):
            return {"logits": {0: "batch_size"}, "value": {0: "batch_size"}}

    return LNormPolicyOnnxConfig


def _vit_config_class():
    from optimum.exporters.onnx.config import VisionOnnxConfig
    from optimum.utils import NormalizedVisionConfig

    class LNormViTOnnxConfig(VisionOnnxConfig):
        """LNormViT: ``pixel_values (batch, num_channels, image_size, image_size)`` -> ``logits`` / ``last_hidden_state``.

        Only the batch axis is dynamic: the learned position table fixes the image size, and the
        patch convolution fixes the channels.
        """

        NORMALIZED_CONFIG_CLASS = NormalizedVisionConfig
        DEFAULT_ONNX_OPSET = 18
        ATOL_FOR_VALIDATION = 1e-4

        @property
        def inputs(self):
            return {"pixel_values": {0: "batch_size"}}

        @property
        def outputs(self):
            if self.task == "feature-extraction":
                return {"last_hidden_state": {0: "batch_size"}, "pooler_output": {0: "batch_size"}}
            return {"logits": {0: "batch_size"}}

    return LNormViTOnnxConfig


def _vision_text_config_class():
    from optimum.exporters.onnx.base import OnnxConfig
    from optimum.utils import DummyTextInputGenerator, DummyVisionInputGenerator, NormalizedConfig

    class LNormVisionTextQuestionGenerator(DummyTextInputGenerator):
        """Question ids and mask, no longer than the text encoder's position table."""

        def __init__(self, task, normalized_config, **kwargs):
            super().__init__(task, normalized_config, **kwargs)
            self.sequence_length = min(self.sequence_length, normalized_config.config.max_position_embeddings)

    class LNormVisionTextOnnxConfig(OnnxConfig):
        """LNormVisionText: ``pixel_values``, ``input_ids``, ``attention_mask`` -> ``logits`` (or the fused states).

        The config exposes ``image_size``, ``num_channels``, ``vocab_size`` and ``max_position_embeddings``
        of its sub-configs, which the dummy generators read.
        """

        NORMALIZED_CONFIG_CLASS = NormalizedConfig
        DUMMY_INPUT_GENERATOR_CLASSES = (DummyVisionInputGenerator, LNormVisionTextQuestionGenerator)
        DEFAULT_ONNX_OPSET = 18
        ATOL_FOR_VALIDATION = 1e-4

        @property
        def inputs(self):
            text_axes = {0: "batch_size", 1: "sequence_length"}
            return {"pixel_values": {0: "batch_size"}, "input_ids": dict(text_axes), "attention_mask": dict(text_axes)}

        @property
        def outputs(self):
            if self.task == "feature-extraction":
                return {"last_hidden_state": {0: "batch_size", 1: "fused_sequence_length"}, "pooler_output": {0: "batch_size"}}
            return {"logits": {0: "batch_size"}}

    return LNormVisionTextOnnxConfig


def _is_family(obj) -> bool:
    config = getattr(obj, "config", None) or getattr(obj, "config_class", None)
    return str(getattr(config, "model_type", "")).startswith(FAMILY_PREFIX)


@contextlib.contextmanager
def optimum_knows_families() -> Iterator[None]:
    """Within the block, Optimum treats hf_lnorm family models as transformers models.

    Optimum infers a model's library from its class's module name
    (``transformers.*``); ours live in ``hf_lnorm.models``.
    """
    from optimum.exporters.tasks import TasksManager

    original = TasksManager.__dict__["_infer_library_from_model_or_model_class"]

    def infer(cls, model=None, model_class=None):
        if _is_family(model) or (model_class is not None and _is_family(model_class)):
            return "transformers"
        return original.__func__(cls, model=model, model_class=model_class)

    TasksManager._infer_library_from_model_or_model_class = classmethod(infer)
    try:
        yield
    finally:
        TasksManager._infer_library_from_model_or_model_class = original


def custom_configs_for(model, task: str) -> Tuple[Optional[Dict], Optional[object]]:
    """``(custom_onnx_configs, fn_get_submodels)`` for an hf_lnorm family model, else ``(None, None)``.

    Raises:
        hf_lnorm.export.UnsupportedArchitectureError: an ``lnorm-*`` model type or task with no ONNX config yet.
    """
    from ..errors import UnsupportedArchitectureError

    model_type = getattr(model.config, "model_type", "")
    if not model_type.startswith(FAMILY_PREFIX):
        return None, None
    if model_type == "lnorm-gpt" and task in ("text-generation", "text-generation-with-past", "feature-extraction"):
        cls = _gpt_config_class()
        use_past = task.endswith("-with-past")
        config = cls(model.config, task=task.replace("-with-past", ""), use_past=use_past, use_past_in_inputs=use_past)
        return {"model": config}, None
    if model_type == "lnorm-policy" and task == "reinforcement-learning":
        return {"model": _policy_config_class()(model.config, task=task)}, None
    if model_type == "lnorm-vit" and task in ("image-classification", "feature-extraction"):
        return {"model": _vit_config_class()(model.config, task=task)}, None
    if model_type == "lnorm-vision-text" and task in ("visual-question-answering", "feature-extraction"):
        return {"model": _vision_text_config_class()(model.config, task=task)}, None
    if model_type in ("lnorm-seq2seq", "lnorm-speech"):  # encoder + decoder (+ decoder with past): export/seq2seq.py
        from .families import family_of
        from .seq2seq import optimum_configs

        return optimum_configs(family_of(model), model, task)
    raise UnsupportedArchitectureError(
        f"unsupported architecture {type(model).__name__!r}: hf_lnorm has no ONNX config for model_type "
        f"{model_type!r} and task {task!r} yet"
    )
