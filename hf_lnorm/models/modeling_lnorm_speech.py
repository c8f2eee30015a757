"""LNormSpeech: a speech transformer as a Hugging Face speech-to-text encoder-decoder.

``input_features`` ``(B, T, num_mel_bins)`` (log-mel frames from ``LNormSpeechFeatureExtractor``)
-> two stride-2 ``Conv1d`` layers (time subsampled by 4) -> learned positions
-> Pre-LN transformer encoder (``build_stack``) -> the LNormSeq2Seq decoder
(causal self-attention with a KV cache, cross-attention to the encoder output,
reused from ``modeling_lnorm_seq2seq.py``) -> logits over the text vocabulary.

``attention_mask`` ``(B, T)`` marks real frames (right padding); it is
subsampled with the features, so padded frames change neither the encoder
output of the real frames nor the decoder's cross-attention.

``LNormSpeechForConditionalGeneration`` works with ``AutoModelForSpeechSeq2Seq``,
``Seq2SeqTrainer`` and ``generate()`` (greedy, sampling, beam search) with an
``EncoderDecoderCache``; the cache is accepted as ``past_key_values``
(transformers 4.x) or ``cache`` (5.x).

Shipped next to saved weights as remote code: imports only torch, transformers
and sibling files.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput

from .configuration_lnorm_seq2seq import LNormSeq2SeqConfig  # noqa: F401  (a direct import: transformers copies only the direct relative imports of remote code)
from .configuration_lnorm_speech import LNormSpeechConfig
# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import build_stack, exporting, init_weights, output_flags
from .modeling_utils_lnorm import encode_bidirectional
from .modeling_lnorm_seq2seq import LNormSeq2SeqDecoder, Seq2SeqHeadMixin, Seq2SeqModelMixin
from .remote_code import RemoteCodeMixin

try:  # transformers 5.x: init functions that skip tensors already loaded from a checkpoint
    from transformers import initialization as _init
except ImportError:  # transformers 4.x
    from torch.nn import init as _init



def subsampled_lengths(lengths: torch.Tensor, times: int = 2) -> torch.Tensor:
    """Frame counts after ``times`` stride-2 convolutions with "same" padding: ``ceil(L / 2)`` each time."""
    for _ in range(times):
        lengths = torch.div(lengths - 1, 2, rounding_mode="floor") + 1
    return lengths


def subsampled_mask(attention_mask: Optional[torch.Tensor], length: int) -> Optional[torch.Tensor]:
    """The ``(B, length)`` 0/1 mask over subsampled frames for a right-padded ``(B, T)`` frame mask (or ``None``)."""
    if attention_mask is None:
        return None
    kept = subsampled_lengths(attention_mask.long().sum(-1))
    return (torch.arange(length, device=attention_mask.device)[None, :] < kept[:, None]).long()


class LNormSpeechSubsampler(nn.Module):
    """Two ``Conv1d(kernel, stride=2, padding=kernel // 2)`` layers with an activation: ``(B, T, F) -> (B, ceil(T/4), hidden)``.

    Frames past each row's length are zeroed before every convolution, so a padded batch row computes
    exactly what the unpadded utterance does (the convolutions' own zero padding plays the same role).
    """

    def __init__(self, config: LNormSpeechConfig):
        super().__init__()
        k = config.conv_kernel_size
        self.conv1 = nn.Conv1d(config.num_mel_bins, config.conv_channels, k, stride=2, padding=k // 2)
        self.conv2 = nn.Conv1d(config.conv_channels, config.hidden_size, k, stride=2, padding=k // 2)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, features: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = features.transpose(1, 2)  # (B, F, T)
        lengths = attention_mask.long().sum(-1) if attention_mask is not None else None
        for conv in (self.conv1, self.conv2):
            if lengths is not None:
                keep = torch.arange(x.shape[-1], device=x.device)[None, :] < lengths[:, None]
                x = x * keep[:, None, :].to(x.dtype)
                lengths = subsampled_lengths(lengths, 1)
            x = self.act(conv(x))
        return x.transpose(1, 2)  # (B, T', hidden)


class LNormSpeechPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    """Weight init, Auto-class wiring and remote-code saving shared by the LNormSpeech models.

    ``save_pretrained`` writes the modeling code next to the weights, so the
    folder loads with ``trust_remote_code=True`` where hf_lnorm is not installed.

    Examples:
        ```python
        from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

        processor = AutoProcessor.from_pretrained("my-asr", trust_remote_code=True)
        model = AutoModelForSpeechSeq2Seq.from_pretrained("my-asr", trust_remote_code=True)
        ```
    """

    config_class = LNormSpeechConfig
    base_model_prefix = "model"
    main_input_name = "input_features"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LNormBlock"]
    _supports_sdpa = True
    _supports_cache_class = True
    auto_map_classes = {
        "AutoConfig": "configuration_lnorm_speech.LNormSpeechConfig",
        "AutoModel": "modeling_lnorm_speech.LNormSpeechModel",
        "AutoModelForSpeechSeq2Seq": "modeling_lnorm_speech.LNormSpeechForConditionalGeneration",
    }
    card_description = (
        "LNormSpeech: a speech recognition encoder-decoder from the hf_lnorm package (log-mel features, "
        "convolutional subsampling by 4, Pre-LN transformer encoder and decoder), built to study layer "
        "normalization (Pre-LN by default, Post-LN as an option; LayerNorm, RMSNorm or none)."
    )
    card_intended_use = (
        "Small-vocabulary speech recognition experiments and LayerNorm ablations (e.g. spoken digits and "
        "playing cards). Not a general-purpose recognizer: it only knows the words it was trained on."
    )
    card_pipeline_tag = "automatic-speech-recognition"
    card_config_keys = (
        "vocab_size",
        "num_mel_bins",
        "conv_channels",
        "max_source_positions",
        "max_position_embeddings",
        "hidden_size",
        "num_hidden_layers",
        "num_decoder_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "dropout",
    )

    def _init_weights(self, module: nn.Module) -> None:
        depth = self.config.num_hidden_layers + self.config.num_decoder_layers
        if isinstance(module, nn.Conv1d):
            # He init: the subsampled features reach the encoder at unit scale, above the position embeddings
            # (a small normal init leaves them ~0.02 and the encoder learns from positions first)
            _init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                _init.zeros_(module.bias)
        else:
            init_weights(module, self.config.initializer_range, depth)


class LNormSpeechEncoder(nn.Module):
    """Subsampling convolutions, learned positions and the bidirectional transformer encoder."""

    def __init__(self, config: LNormSpeechConfig):
        super().__init__()
        self.config = config
        self.subsample = LNormSpeechSubsampler(config)
        self.embed_positions = nn.Embedding(config.max_source_positions, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers, self.final_norm = build_stack(config, config.num_hidden_layers, causal=False)
        self.gradient_checkpointing = False

    def _check_features(self, input_features) -> None:
        if not torch.is_tensor(input_features) or input_features.dim() != 3 or input_features.shape[-1] != self.config.num_mel_bins:
            shape = tuple(input_features.shape) if torch.is_tensor(input_features) else type(input_features).__name__
            raise ValueError(
                f"input_features must be a (batch, frames, num_mel_bins={self.config.num_mel_bins}) tensor of log-mel "
                f"frames (what LNormSpeechFeatureExtractor returns), got {shape}"
            )

    def forward(
        self,
        input_features: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[Tuple, BaseModelOutput]:
        """Encode ``(B, T, num_mel_bins)`` features (real frames marked by ``attention_mask (B, T)``) into ``(B, ceil(T/4), hidden)``."""
        config = self.config
        self._check_features(input_features)
        output_attentions, output_hidden_states, return_dict = output_flags(config, output_attentions, output_hidden_states, return_dict)
        if attention_mask is not None and attention_mask.shape != input_features.shape[:2]:
            raise ValueError(
                f"attention_mask of shape {tuple(attention_mask.shape)} does not match input_features of shape "
                f"{tuple(input_features.shape)}; expected (batch, frames) = {tuple(input_features.shape[:2])}"
            )
        hidden = self.subsample(input_features, attention_mask)
        length = hidden.shape[1]
        if length > config.max_source_positions:
            raise ValueError(
                f"input of {input_features.shape[1]} frames gives {length} encoder positions after subsampling by 4, "
                f"more than max_source_positions={config.max_source_positions}; use shorter audio (at most "
                f"{config.max_source_positions * 4} frames) or a config with a larger max_source_positions"
            )
        positions = torch.arange(length, device=hidden.device)
        hidden = self.dropout(hidden + self.embed_positions(positions)[None])
        frame_mask = subsampled_mask(attention_mask, length)
        return encode_bidirectional(self, hidden, frame_mask, output_attentions, output_hidden_states, return_dict)


class LNormSpeechModel(Seq2SeqModelMixin, LNormSpeechPreTrainedModel):
    """The bare speech encoder-decoder (no output projection).

    Args:
        config: the model configuration.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormSpeechConfig, LNormSpeechModel
        >>> config = LNormSpeechConfig(vocab_size=32, num_mel_bins=16, conv_channels=32, hidden_size=32,
        ...                            num_hidden_layers=1, num_attention_heads=4)
        >>> out = LNormSpeechModel(config)(torch.randn(2, 40, 16), decoder_input_ids=torch.tensor([[1, 5], [1, 6]]))
        >>> out.encoder_last_hidden_state.shape, out.last_hidden_state.shape  # 40 frames -> 10 positions
        (torch.Size([2, 10, 32]), torch.Size([2, 2, 32]))
    """

    def __init__(self, config: LNormSpeechConfig):
        super().__init__(config)
        self.encoder = LNormSpeechEncoder(config)
        self.decoder = LNormSeq2SeqDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.decoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.decoder.embed_tokens = value

    def _cross_attention_mask(self, attention_mask: Optional[torch.Tensor], encoder_hidden: torch.Tensor) -> Optional[torch.Tensor]:
        """The frame mask subsampled to the encoder positions: ``(B, S)``, ``(B, 1, 1, S)`` under an exporter's trace, or ``None``."""
        encoder_mask = subsampled_mask(attention_mask, encoder_hidden.shape[1])
        if encoder_mask is not None and exporting():  # a (B, 1, 1, S) mask is used as it is, without a value check
            encoder_mask = encoder_mask[:, None, None, :].bool()
        return encoder_mask

    def forward(
        self,
        input_features: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        decoder_input_ids: Optional[torch.LongTensor] = None,
        decoder_attention_mask: Optional[torch.Tensor] = None,
        encoder_outputs=None,
        past_key_values=None,
        decoder_inputs_embeds: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache=None,
        **kwargs,
    ) -> Union[Tuple, Seq2SeqModelOutput]:
        """Encode the features (unless ``encoder_outputs`` is given) and decode the text.

        Args:
            input_features: ``(B, T, num_mel_bins)`` log-mel frames.
            attention_mask: ``(B, T)``, 1 for real frames (right padding); also needed when
                ``encoder_outputs`` is given (it masks the cross-attention).
            decoder_input_ids: ``(B, L)`` text inputs.
            decoder_attention_mask: ``(B, past + L)``, 1 for real text tokens.
            encoder_outputs (transformers.modeling_outputs.BaseModelOutput | tuple | None): precomputed
                encoder output (``generate()`` passes it).
            past_key_values (transformers.EncoderDecoderCache | None): the KV cache (transformers 4.x name).
            decoder_inputs_embeds: ``(B, L, hidden)`` instead of ``decoder_input_ids``.
            use_cache: return the (updated) cache.
            output_attentions: also return attention weights.
            output_hidden_states: also return hidden states.
            return_dict: return a ``ModelOutput`` rather than a tuple.
            cache (transformers.EncoderDecoderCache | None): the KV cache (transformers 5.x name).
            **kwargs (Any): accepted for ``generate()`` and Trainer compatibility; unused.

        Returns:
            ``Seq2SeqModelOutput`` (decoder ``last_hidden_state (B, L, hidden)``, cache, encoder output).

        Raises:
            ValueError: features not shaped ``(B, T, num_mel_bins)``, a mask of another shape, or more
                frames than ``4 * config.max_source_positions``.
        """
        return self._encode_decode(
            {"input_features": input_features}, attention_mask=attention_mask, encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask, decoder_inputs_embeds=decoder_inputs_embeds,
            past_key_values=past_key_values, cache=cache, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=return_dict,
        )


class LNormSpeechForConditionalGeneration(Seq2SeqHeadMixin, LNormSpeechPreTrainedModel, GenerationMixin):
    """LNormSpeech with the output projection over the text vocabulary; for recognition and ``generate()``.

    With ``tie_word_embeddings`` the projection *is* the decoder embedding (no separate ``lm_head`` parameter).
    With ``config.ctc_weight > 0`` it also has a CTC head on the encoder output, used for the training loss only.

    Args:
        config: the model configuration.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormSpeechConfig, LNormSpeechForConditionalGeneration
        >>> config = LNormSpeechConfig(vocab_size=32, num_mel_bins=16, conv_channels=32, hidden_size=32,
        ...                            num_hidden_layers=1, num_attention_heads=4, ctc_weight=0.3)
        >>> model = LNormSpeechForConditionalGeneration(config).eval()
        >>> features, labels = torch.randn(2, 40, 16), torch.tensor([[5, 6, 2], [7, 2, -100]])
        >>> model(features, labels=labels).loss.shape
        torch.Size([])
        >>> model.generate(features, max_new_tokens=3, min_new_tokens=3).shape
        torch.Size([2, 4])
    """

    def __init__(self, config: LNormSpeechConfig):
        super().__init__(config)
        self.model = LNormSpeechModel(config)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # auxiliary CTC head over the encoder output (training only; blank = pad_token_id)
        self.ctc_head = nn.Linear(config.hidden_size, config.vocab_size) if config.ctc_weight > 0 else None
        self.post_init()

    def ctc_loss(self, encoder_hidden: torch.Tensor, attention_mask: Optional[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """CTC loss of ``ctc_head(encoder_hidden)`` against ``labels`` without ``-100``, pad and eos (blank = pad id).

        Args:
            encoder_hidden: ``(B, S, hidden)`` encoder output.
            attention_mask: the ``(B, T)`` frame mask (subsampled here to the encoder lengths), or None.
            labels: ``(B, L)`` target ids.

        Returns:
            The mean CTC loss (infinite losses zeroed).
        """
        config = self.config
        log_probs = F.log_softmax(self.ctc_head(encoder_hidden).float(), dim=-1).transpose(0, 1)  # (T, B, V)
        batch, length = encoder_hidden.shape[:2]
        if attention_mask is None:
            input_lengths = torch.full((batch,), length, dtype=torch.long, device=encoder_hidden.device)
        else:
            input_lengths = subsampled_lengths(attention_mask.long().sum(-1))
        keep = (labels >= 0) & (labels != config.pad_token_id) & (labels != config.eos_token_id)
        targets = labels[keep]
        target_lengths = keep.sum(-1)
        return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=config.pad_token_id, zero_infinity=True)

    def _lm_loss(self, logits: torch.Tensor, labels: torch.Tensor, out: Seq2SeqModelOutput, attention_mask, num_items_in_batch) -> torch.Tensor:
        """The token cross-entropy, mixed with the auxiliary CTC loss when ``config.ctc_weight > 0``."""
        loss = super()._lm_loss(logits, labels, out, attention_mask, num_items_in_batch)
        if self.ctc_head is not None:
            weight = self.config.ctc_weight
            loss = (1 - weight) * loss + weight * self.ctc_loss(out.encoder_last_hidden_state, attention_mask, labels)
        return loss

    def forward(
        self,
        input_features: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        decoder_input_ids: Optional[torch.LongTensor] = None,
        decoder_attention_mask: Optional[torch.Tensor] = None,
        encoder_outputs=None,
        past_key_values=None,
        decoder_inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache=None,
        **kwargs,
    ) -> Union[Tuple, Seq2SeqLMOutput]:
        """Text-token logits; the cross-entropy loss when ``labels`` are given.

        The arguments not listed here are those of ``LNormSpeechModel.forward``.

        Args:
            input_features: ``(B, T, num_mel_bins)`` log-mel frames.
            attention_mask: ``(B, T)``, 1 for real frames.
            decoder_input_ids: ``(B, L)`` text inputs; built from ``labels`` when both are None.
            decoder_attention_mask: ``(B, past + L)``, 1 for real text tokens.
            encoder_outputs (transformers.modeling_outputs.BaseModelOutput | tuple | None): precomputed encoder output.
            past_key_values (transformers.EncoderDecoderCache | None): the KV cache (transformers 4.x name).
            decoder_inputs_embeds: ``(B, L, hidden)`` instead of ``decoder_input_ids``.
            labels: ``(B, L)`` target ids (``-100`` ignored). When ``decoder_input_ids`` is ``None`` they are
                built from the labels by ``shift_tokens_right``; position t of the logits predicts ``labels[t]``.
                With ``config.ctc_weight > 0`` the loss adds the auxiliary CTC loss (see ``LNormSpeechConfig``).
            use_cache: return the (updated) cache.
            output_attentions: also return attention weights.
            output_hidden_states: also return hidden states.
            return_dict: return a ``ModelOutput`` rather than a tuple.
            cache (transformers.EncoderDecoderCache | None): the KV cache (transformers 5.x name).
            **kwargs (Any): ``num_items_in_batch``, Trainer's token count for gradient accumulation; others unused.

        Returns:
            ``Seq2SeqLMOutput`` with ``logits (B, L, vocab_size)``.
        """
        return self._lm_forward(
            {"input_features": input_features}, labels, return_dict, kwargs.get("num_items_in_batch"),
            attention_mask=attention_mask, encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, decoder_inputs_embeds=decoder_inputs_embeds, past_key_values=past_key_values,
            cache=cache, use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )


__all__ = [
    "LNormSpeechEncoder",
    "LNormSpeechModel",
    "LNormSpeechForConditionalGeneration",
    "LNormSpeechPreTrainedModel",
    "LNormSpeechSubsampler",
    "subsampled_lengths",
    "subsampled_mask",
]
