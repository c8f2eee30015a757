"""The table of hf_lnorm's encoder-decoder export specs, and what every spec shares.

An encoder-decoder family is exported as several graphs (``encoder_model.onnx``,
``decoder_model.onnx``, ``decoder_with_past_model.onnx``, Optimum's names); an
``EncoderDecoderFamily`` describes what differs between families (the encoder's
input, example inputs, Optimum config, dynamic shapes). Each family's export
module registers its spec with ``register_family`` when it is imported
(``export/seq2seq.py``: ``lnorm-seq2seq``; ``export/speech.py``: ``lnorm-speech``);
the exporters find it with ``family_of(model)``, so no family module imports another.

Adding a family: describe it with an ``EncoderDecoderFamily``, call
``register_family`` at the bottom of its module, and import that module from
``hf_lnorm/export/__init__.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

__all__ = [
    "DECODER_FILE",
    "DECODER_WITH_PAST_FILE",
    "ENCODER_FILE",
    "EncoderDecoderFamily",
    "FEATURES",
    "GRAPH_FILES",
    "WITH_PAST",
    "decoder_output",
    "decoder_vocab",
    "family_of",
    "register_family",
    "registered_families",
]

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"
GRAPH_FILES = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)
WITH_PAST = "-with-past"
FEATURES = "feature-extraction"  # the bare encoder-decoder (no LM head): the decoder's last_hidden_state

_FAMILIES: Dict[str, "EncoderDecoderFamily"] = {}


@dataclass(frozen=True)
class EncoderDecoderFamily:
    """What differs between hf_lnorm's encoder-decoder families.

    Attributes:
        model_type: ``config.model_type``.
        task: the export task without past (``<task>-with-past`` adds the decoder-with-past graph).
        encoder_input: name of the encoder's main input (``input_ids`` / ``input_features``).
        example_inputs: ``(config, batch, source, length, seed) -> {encoder_input, attention_mask, decoder_input_ids}``,
            the last row right-padded; ``source`` counts tokens or frames.
        export_sizes / verify_sizes: ``(batch, source, length)`` for the export trace and for ``verify``.
        onnx_config_class: ``() -> Optimum OnnxConfig class`` (imports Optimum lazily).
        dynamo_source_dims: ``(config, batch_dim) -> (encoder input shapes, decoder encoder_outputs shape,
            decoder attention_mask shape)`` for ``torch.export``.
        optimum_encoder: ``model -> module`` Optimum exports as the encoder (default: ``model.get_encoder()``).
        dynamo_past: whether the torch.onnx path writes the decoder-with-past graph for ``<task>-with-past``.
        feature_extraction: whether task ``feature-extraction`` (the bare model, no past) is exported.
    """

    model_type: str
    task: str
    encoder_input: str
    example_inputs: Callable[..., Dict[str, torch.Tensor]]
    export_sizes: Tuple[int, int, int]
    verify_sizes: Tuple[int, int, int]
    onnx_config_class: Callable[[], type]
    dynamo_source_dims: Callable[..., Tuple[tuple, dict, dict]]
    optimum_encoder: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None
    dynamo_past: bool = True
    feature_extraction: bool = False

    @property
    def tasks(self) -> Tuple[str, ...]:
        return (self.task, self.task + WITH_PAST) + ((FEATURES,) if self.feature_extraction else ())


def decoder_output(task: str) -> str:
    """The decoder graph's main output: ``last_hidden_state`` for the bare model's features, else ``logits``."""
    return "last_hidden_state" if task == FEATURES else "logits"


def decoder_vocab(config) -> int:
    """Size of the decoder's vocabulary (``decoder_vocab_size`` where the target vocabulary differs from the source's)."""
    return getattr(config, "decoder_vocab_size", None) or config.vocab_size


def register_family(family: "EncoderDecoderFamily") -> "EncoderDecoderFamily":
    """Add ``family`` to the table ``family_of`` reads, keyed by its ``model_type``; returns it.

    Registering the same spec again is a no-op.

    Raises:
        ValueError: another spec is already registered for that ``model_type``.
    """
    current = _FAMILIES.get(family.model_type)
    if current is not None and current is not family:
        raise ValueError(f"an encoder-decoder export spec for model_type {family.model_type!r} is already registered")
    _FAMILIES[family.model_type] = family
    return family


def registered_families() -> List["EncoderDecoderFamily"]:
    """Every registered spec, in registration order."""
    return list(_FAMILIES.values())


def family_of(model) -> Optional["EncoderDecoderFamily"]:
    """The registered ``EncoderDecoderFamily`` of an hf_lnorm encoder-decoder model, else ``None``."""
    return _FAMILIES.get(getattr(getattr(model, "config", None), "model_type", ""))
