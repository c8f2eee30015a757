"""ONNX export of LNormSpeech (``model_type`` ``lnorm-speech``): an encoder graph and decoder graphs.

The machinery is ``export/seq2seq.py``'s, shared with LNormSeq2Seq (whose decoder LNormSpeech
uses); this module describes what is speech-specific and registers it in ``export/families.py``:

* encoder: ``input_features (batch, frames, num_mel_bins)``, ``attention_mask (batch, frames)``
  -> ``last_hidden_state (batch, ceil(frames / 4), hidden)``;
* decoder: ``decoder_input_ids (batch, length)``, ``encoder_outputs`` (the encoder's
  ``last_hidden_state``), ``attention_mask`` (the *frame* mask; the graph subsamples it)
  -> ``logits`` (and, with past, ``present.{i}.decoder/encoder.key/value``);
* decoder with past (Optimum path only): also ``past_key_values.{i}.decoder/encoder.key/value``.

``SPEECH`` is the family spec that ``export/seq2seq.py`` exports and ``export/seq2seq_runtime.py`` verifies:
through Optimum on transformers 4.57 (tasks ``automatic-speech-recognition`` and
``automatic-speech-recognition-with-past``), through torch.onnx on 5.x (encoder + decoder).
"""

from __future__ import annotations

from typing import Dict

import torch

from .families import EncoderDecoderFamily, register_family
from .seq2seq import optimum_base_class

TASK = "automatic-speech-recognition"


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

    class LNormSpeechOnnxConfig(optimum_base_class(AudioToTextOnnxConfig)):
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


SPEECH = register_family(EncoderDecoderFamily(
    model_type="lnorm-speech",
    task=TASK,
    encoder_input="input_features",
    example_inputs=example_inputs,
    export_sizes=(2, 48, 5),
    verify_sizes=(3, 36, 4),  # batch 3, 36 frames with the last row padded, 4 decoder tokens
    onnx_config_class=_optimum_config_class,
    dynamo_source_dims=_dynamo_source_dims,
    dynamo_past=False,  # the torch.onnx path writes encoder + decoder only
))


__all__ = ["SPEECH", "TASK", "example_inputs"]
