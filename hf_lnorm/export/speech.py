"""ONNX export of LNormSpeech (``model_type`` ``lnorm-speech``): an encoder graph and decoder graphs.

The machinery is ``export/seq2seq.py``'s, shared with LNormSeq2Seq (whose decoder LNormSpeech
uses); this module describes what is speech-specific:

* encoder: ``input_features (batch, frames, num_mel_bins)``, ``attention_mask (batch, frames)``
  -> ``last_hidden_state (batch, ceil(frames / 4), hidden)``;
* decoder: ``decoder_input_ids (batch, length)``, ``encoder_outputs`` (the encoder's
  ``last_hidden_state``), ``attention_mask`` (the *frame* mask; the graph subsamples it)
  -> ``logits`` (and, with past, ``present.{i}.decoder/encoder.key/value``);
* decoder with past (Optimum path only): also ``past_key_values.{i}.decoder/encoder.key/value``.

Paths: ``optimum_configs(model, task)`` on transformers 4.57 + optimum-onnx (tasks
``automatic-speech-recognition`` and ``automatic-speech-recognition-with-past``);
``export_dynamo(model, out_dir, opset)`` on transformers 5.x (encoder + decoder without past).
``verify(model, out_dir)`` runs every graph in ONNX Runtime on fresh inputs of other sizes
and returns the largest absolute difference from PyTorch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Union

import torch

from . import seq2seq as _seq2seq
from .seq2seq import DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE

TASK = "automatic-speech-recognition"


def is_speech(model) -> bool:
    """Whether ``model`` is an LNormSpeech model."""
    return getattr(getattr(model, "config", None), "model_type", "") == "lnorm-speech"


def example_inputs(config, batch: int = 2, frames: int = 48, length: int = 5, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Features, a frame mask with the last row right-padded, and decoder ids."""
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, frames, config.num_mel_bins, generator=gen)
    mask = torch.ones(batch, frames, dtype=torch.long)
    if batch > 1:
        mask[-1, frames - max(1, frames // 3) :] = 0
    ids = torch.randint(3, config.vocab_size, (batch, length), generator=gen)
    ids[:, 0] = config.decoder_start_token_id
    return {"input_features": features, "attention_mask": mask, "decoder_input_ids": ids}


# --------------------------------------------------------------------------- Optimum (transformers 4.57)


def _optimum_config_class():
    from optimum.exporters.onnx.config import AudioToTextOnnxConfig
    from optimum.utils import DummyInputGenerator, DummySeq2SeqDecoderTextInputGenerator, DummySeq2SeqPastKeyValuesGenerator

    class LNormSpeechAudioInputGenerator(DummyInputGenerator):
        """``input_features (batch, frames, num_mel_bins)`` and a frame ``attention_mask`` whose last row is padded."""

        SUPPORTED_INPUT_NAMES = ("input_features", "attention_mask")

        def __init__(self, task, normalized_config, batch_size: int = 2, **kwargs):
            self.task = task
            self.batch_size = max(2, batch_size)
            self.num_mel_bins = normalized_config.config.num_mel_bins
            self.frames = 64

        def generate(self, input_name: str, framework: str = "pt", int_dtype: str = "int64", float_dtype: str = "fp32"):
            if input_name == "input_features":
                shape = [self.batch_size, self.frames, self.num_mel_bins]
                return self.random_float_tensor(shape, min_value=-2.0, max_value=2.0, framework=framework, dtype=float_dtype)
            mask = torch.ones(self.batch_size, self.frames, dtype=torch.int64)
            mask[-1, self.frames // 2 :] = 0
            return mask

    class LNormSpeechOnnxConfig(_seq2seq.optimum_base_class(AudioToTextOnnxConfig)):
        """LNormSpeech for Optimum: encoder, decoder and decoder-with-past graphs (see the module docstring)."""

        DUMMY_INPUT_GENERATOR_CLASSES = (
            LNormSpeechAudioInputGenerator,
            DummySeq2SeqDecoderTextInputGenerator,
            DummySeq2SeqPastKeyValuesGenerator,
        )

        @property
        def inputs(self) -> Dict[str, Dict[int, str]]:
            common = {}
            if self._behavior.value in ("encoder", "monolith"):
                common["input_features"] = {0: "batch_size", 1: "feature_frames"}
            else:
                common["encoder_outputs"] = {0: "batch_size", 1: "encoder_sequence_length"}
            common["attention_mask"] = {0: "batch_size", 1: "feature_frames"}
            if self._behavior.value in ("decoder", "monolith"):
                common["decoder_input_ids"] = {0: "batch_size", 1: "decoder_sequence_length"}
                if self.use_past_in_inputs:
                    self.add_past_key_values(common, direction="inputs")
            return common

        @property
        def outputs(self) -> Dict[str, Dict[int, str]]:
            common = super().outputs
            if self._behavior.value == "encoder":
                common["last_hidden_state"] = {0: "batch_size", 1: "encoder_sequence_length"}
            return common

    return LNormSpeechOnnxConfig


def _dynamo_source_dims(config, batch_dim):
    # frames = 4k keeps ceil(ceil(frames / 2) / 2) exact for the shape solver
    frames = 4 * torch.export.Dim("feature_frames_quarter", min=2, max=config.max_source_positions)
    enc_len = torch.export.Dim("encoder_sequence_length", max=config.max_source_positions)
    encoder = ({0: batch_dim, 1: frames}, {0: batch_dim, 1: frames})
    return encoder, {0: batch_dim, 1: enc_len}, {0: batch_dim, 1: torch.export.Dim("feature_frames")}


SPEECH = _seq2seq.EncoderDecoderFamily(
    model_type="lnorm-speech",
    task=TASK,
    encoder_input="input_features",
    example_inputs=example_inputs,
    export_sizes=(2, 48, 5),
    verify_sizes=(3, 36, 4),  # batch 3, 36 frames with the last row padded, 4 decoder tokens
    onnx_config_class=_optimum_config_class,
    dynamo_source_dims=_dynamo_source_dims,
    dynamo_past=False,  # the torch.onnx path writes encoder + decoder only (as before the shared module)
)


def optimum_configs(model, task: str):
    """``(custom_onnx_configs, None)`` for Optimum's exporter, keyed as its encoder-decoder submodels."""
    return _seq2seq.optimum_configs(SPEECH, model, task)


def export_dynamo(model, out_dir: Union[str, Path], opset: int) -> List[str]:
    """Write ``encoder_model.onnx`` and ``decoder_model.onnx`` (no past) with ``torch.onnx.export(dynamo=True)``."""
    return _seq2seq.export_dynamo(SPEECH, model, out_dir, opset, task=TASK)


def verify(model, out_dir: Union[str, Path]) -> float:
    """Largest |ONNX Runtime - PyTorch| over the encoder output and the decoder logits (and the decoder with past)."""
    return _seq2seq.verify(SPEECH, model, out_dir)


__all__ = ["DECODER_FILE", "DECODER_WITH_PAST_FILE", "ENCODER_FILE", "SPEECH", "TASK", "example_inputs", "export_dynamo",
           "is_speech", "optimum_configs", "verify"]
