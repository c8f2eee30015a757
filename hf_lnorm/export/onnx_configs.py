"""Optimum ONNX configs for hf_lnorm's own model families (``model_type`` ``lnorm-*``).

Optimum's exporter refuses model types it does not know unless it is given
``custom_onnx_configs``; ``custom_configs_for(model, task)`` returns them for
our families, and ``(None, None)`` for every other model (Optimum's own configs apply).

* ``lnorm-gpt`` (GPT-2-shaped decoder): inputs ``input_ids``, ``attention_mask``,
  ``position_ids`` and, with past, ``past_key_values.{i}.key/value``; outputs
  ``logits`` and ``present.{i}.key/value``: what ``ORTModelForCausalLM`` expects.
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
    from . import UnsupportedArchitectureError

    model_type = getattr(model.config, "model_type", "")
    if not model_type.startswith(FAMILY_PREFIX):
        return None, None
    if model_type == "lnorm-gpt" and task in ("text-generation", "text-generation-with-past", "feature-extraction"):
        cls = _gpt_config_class()
        use_past = task.endswith("-with-past")
        config = cls(model.config, task=task.replace("-with-past", ""), use_past=use_past, use_past_in_inputs=use_past)
        return {"model": config}, None
    raise UnsupportedArchitectureError(
        f"unsupported architecture {type(model).__name__!r}: hf_lnorm has no ONNX config for model_type "
        f"{model_type!r} and task {task!r} yet"
    )
