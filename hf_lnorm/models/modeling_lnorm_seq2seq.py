"""LNormSeq2Seq: a translation transformer as a Hugging Face encoder-decoder.

Encoder (bidirectional self-attention) and decoder (causal self-attention +
cross-attention) built from the shared blocks in ``layers.py``; Pre-LN by
default, Post-LN with ``norm_position="post"``. Token embeddings are shared
between encoder and decoder (``share_embeddings=True``, a joint vocabulary)
or separate (two vocabularies, ``decoder_vocab_size``); the output projection
reuses the decoder embedding when ``tie_word_embeddings``.

``LNormSeq2SeqForConditionalGeneration`` works with ``AutoModelForSeq2SeqLM``,
``Seq2SeqTrainer`` and ``generate()`` (greedy, sampling, beam search) with an
``EncoderDecoderCache`` (decoder self-attention grows, cross-attention keys and
values are computed once). The cache is accepted as ``past_key_values``
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
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPastAndCrossAttentions, Seq2SeqLMOutput, Seq2SeqModelOutput

from .configuration_lnorm_seq2seq import LNormSeq2SeqConfig
# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import (
    CACHE_FIELD,
    build_attention_mask,
    build_stack,
    check_context,
    init_weights,
    output_flags,
    padded_for_export,
    position_ids_from,
    prepare_cache,
    run_stack,
    token_loss,
)
from .modeling_utils_lnorm import encode_bidirectional, model_output
from .remote_code import RemoteCodeMixin


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing: ``[start] + labels[:-1]``, with ``-100`` replaced by the pad id.

    Args:
        labels: ``(B, T)`` target ids.
        pad_token_id: id written where labels are ``-100``.
        decoder_start_token_id: first decoder input.

    Returns:
        ``(B, T)`` decoder input ids.
    """
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)



class _SharedModule:
    """Holds a module without registering it as a child, so a shared embedding is stored once in the state_dict."""

    def __init__(self, module: nn.Module):
        self.module = module


class LNormSeq2SeqPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    """Weight init, Auto-class wiring and remote-code saving shared by the LNormSeq2Seq models.

    GPT-2 style init (residual projections scaled by the total depth of encoder
    and decoder), norm gains at 1. ``save_pretrained`` writes the modeling code
    and a complete ``auto_map`` next to the weights, so the folder loads with
    ``trust_remote_code=True`` where hf_lnorm is not installed.

    Examples:
        ```python
        from transformers import AutoModelForSeq2SeqLM

        model = AutoModelForSeq2SeqLM.from_pretrained("my-translator", trust_remote_code=True)
        ```
    """

    config_class = LNormSeq2SeqConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LNormBlock"]
    _supports_sdpa = True
    _supports_cache_class = True
    auto_map_classes = {
        "AutoConfig": "configuration_lnorm_seq2seq.LNormSeq2SeqConfig",
        "AutoModel": "modeling_lnorm_seq2seq.LNormSeq2SeqModel",
        "AutoModelForSeq2SeqLM": "modeling_lnorm_seq2seq.LNormSeq2SeqForConditionalGeneration",
    }
    card_description = (
        "LNormSeq2Seq: an encoder-decoder transformer for translation from the hf_lnorm package, built to study "
        "layer normalization (Pre-LN by default, Post-LN as an option; LayerNorm, RMSNorm or none)."
    )
    card_intended_use = (
        "Small-scale machine translation experiments and LayerNorm ablations. Not intended for production "
        "translation: the model is small and was trained on little data."
    )
    card_pipeline_tag = "translation"
    card_config_keys = (
        "vocab_size",
        "decoder_vocab_size",
        "max_position_embeddings",
        "hidden_size",
        "num_hidden_layers",
        "num_decoder_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "dropout",
        "share_embeddings",
        "tie_word_embeddings",
    )

    def _init_weights(self, module: nn.Module) -> None:
        depth = self.config.num_hidden_layers + self.config.num_decoder_layers
        init_weights(module, self.config.initializer_range, depth)


class _Stack(nn.Module):
    """Encoder or decoder stack: embeddings, blocks, final norm (Pre-LN)."""

    def __init__(self, config: LNormSeq2SeqConfig, embed_tokens: Optional[nn.Embedding], vocab_size: int, num_layers: int, decoder: bool):
        super().__init__()
        self.config = config
        self.is_decoder = decoder
        if embed_tokens is None:
            self.embed_tokens = nn.Embedding(vocab_size, config.hidden_size)
            self._shared = None
        else:
            self._shared = _SharedModule(embed_tokens)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers, self.final_norm = build_stack(config, num_layers, causal=decoder, cross_attention=decoder)
        self.gradient_checkpointing = False

    def get_input_embeddings(self) -> nn.Embedding:
        return self._shared.module if self._shared is not None else self.embed_tokens

    def _embed(self, input_ids, inputs_embeds, attention_mask, past_len: int):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds (decoder_input_ids / decoder_inputs_embeds)")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        batch, length = inputs_embeds.shape[:2]
        check_context(past_len + length, None, self.config.max_position_embeddings)
        positions = position_ids_from(attention_mask, batch, length, past_len, inputs_embeds.device, padded=padded_for_export(attention_mask))
        return self.dropout(inputs_embeds + self.embed_positions(positions)), length


class LNormSeq2SeqEncoder(_Stack):
    """The encoder: bidirectional self-attention over the source."""

    def __init__(self, config: LNormSeq2SeqConfig, embed_tokens: Optional[nn.Embedding] = None):
        super().__init__(config, embed_tokens, config.vocab_size, config.num_hidden_layers, decoder=False)

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[Tuple, BaseModelOutput]:
        """Encode ``(B, S)`` source ids (padding marked by ``attention_mask``) into ``(B, S, hidden)``."""
        output_attentions, output_hidden_states, return_dict = output_flags(self.config, output_attentions, output_hidden_states, return_dict)
        hidden, _ = self._embed(input_ids, inputs_embeds, attention_mask, 0)
        return encode_bidirectional(self, hidden, attention_mask, output_attentions, output_hidden_states, return_dict)


class LNormSeq2SeqDecoder(_Stack):
    """The decoder: causal self-attention over the target, cross-attention to the encoder output."""

    def __init__(self, config: LNormSeq2SeqConfig, embed_tokens: Optional[nn.Embedding] = None):
        super().__init__(config, embed_tokens, config.decoder_vocab_size, config.num_decoder_layers, decoder=True)

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
        past_key_values=None,
        inputs_embeds: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache=None,
        **kwargs,
    ) -> Union[Tuple, BaseModelOutputWithPastAndCrossAttentions]:
        """Decode ``(B, T)`` target ids against ``encoder_hidden_states (B, S, hidden)``.

        The cache (``past_key_values`` / ``cache``) is an ``EncoderDecoderCache``; a plain ``Cache`` is
        wrapped with an empty cross-attention cache.
        """
        output_attentions, output_hidden_states, return_dict = output_flags(self.config, output_attentions, output_hidden_states, return_dict)
        cache, past_len = prepare_cache(self, past_key_values, cache, use_cache, encoder_decoder=True)

        hidden, length = self._embed(input_ids, inputs_embeds, attention_mask, past_len)
        mask, is_causal = build_attention_mask(attention_mask, length, past_len, causal=True, padded=padded_for_export(attention_mask))
        enc_mask = None
        if encoder_attention_mask is not None and encoder_attention_mask.dim() == 4:  # already (B, 1, 1, S), e.g. for export
            enc_mask = encoder_attention_mask.bool()
        elif encoder_attention_mask is not None and (padded_for_export(encoder_attention_mask) or not bool(encoder_attention_mask.all())):
            enc_mask = encoder_attention_mask[:, None, None, :].bool()  # (B, 1, 1, S)

        hidden, all_hidden, all_attn, all_cross = run_stack(
            self.layers,
            self.final_norm,
            hidden,
            output_attentions,
            output_hidden_states,
            attention_mask=mask,
            is_causal=is_causal,
            cache=cache,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=enc_mask,
        )
        return model_output(BaseModelOutputWithPastAndCrossAttentions, return_dict, last_hidden_state=hidden,
                            **{CACHE_FIELD: cache}, hidden_states=all_hidden, attentions=all_attn, cross_attentions=all_cross)


class Seq2SeqModelMixin:
    """Encoder-decoder plumbing of a bare model over ``self.encoder`` and ``self.decoder`` (shared with LNormSpeech)."""

    def get_encoder(self, *args, **kwargs) -> nn.Module:
        return self.encoder

    def get_decoder(self, *args, **kwargs) -> LNormSeq2SeqDecoder:
        return self.decoder

    def _cross_attention_mask(self, attention_mask: Optional[torch.Tensor], encoder_hidden: torch.Tensor) -> Optional[torch.Tensor]:
        """The decoder's mask over the encoder output: the source ``attention_mask`` itself (LNormSpeech subsamples it)."""
        return attention_mask

    def _encode_decode(
        self,
        encoder_inputs: dict,
        *,
        attention_mask,
        encoder_outputs,
        decoder_input_ids,
        decoder_attention_mask,
        decoder_inputs_embeds,
        past_key_values,
        cache,
        use_cache,
        output_attentions,
        output_hidden_states,
        return_dict,
    ) -> Union[Tuple, Seq2SeqModelOutput]:
        """The body of ``forward``: encode (unless ``encoder_outputs`` is given), decode, assemble the output.

        ``encoder_inputs`` holds the encoder's inputs by name (``input_ids`` / ``inputs_embeds``, or
        ``input_features``); the other arguments are those of ``forward``.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                **encoder_inputs,
                attention_mask=attention_mask,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
            )
        elif not isinstance(encoder_outputs, BaseModelOutput):
            encoder_outputs = BaseModelOutput(
                last_hidden_state=encoder_outputs[0],
                hidden_states=encoder_outputs[1] if len(encoder_outputs) > 1 else None,
                attentions=encoder_outputs[2] if len(encoder_outputs) > 2 else None,
            )
        encoder_hidden = encoder_outputs.last_hidden_state
        decoded = self.decoder(
            decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_hidden,
            encoder_attention_mask=self._cross_attention_mask(attention_mask, encoder_hidden),
            past_key_values=past_key_values,
            inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            cache=cache,
        )
        present = decoded[CACHE_FIELD] if CACHE_FIELD in decoded else None
        if not return_dict:
            parts = (decoded.last_hidden_state, present, decoded.hidden_states, decoded.attentions, decoded.cross_attentions)
            parts += (encoder_hidden, encoder_outputs.hidden_states, encoder_outputs.attentions)
            return tuple(v for v in parts if v is not None)
        return Seq2SeqModelOutput(
            last_hidden_state=decoded.last_hidden_state,
            decoder_hidden_states=decoded.hidden_states,
            decoder_attentions=decoded.attentions,
            cross_attentions=decoded.cross_attentions,
            encoder_last_hidden_state=encoder_hidden,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            **{CACHE_FIELD: present},
        )


class LNormSeq2SeqModel(Seq2SeqModelMixin, LNormSeq2SeqPreTrainedModel):
    """The bare encoder-decoder (no output projection).

    Args:
        config: the model configuration.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormSeq2SeqConfig, LNormSeq2SeqModel
        >>> model = LNormSeq2SeqModel(LNormSeq2SeqConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                                              num_attention_heads=4))
        >>> out = model(torch.tensor([[5, 6, 7]]), decoder_input_ids=torch.tensor([[1, 8]]))
        >>> out.last_hidden_state.shape, out.encoder_last_hidden_state.shape
        (torch.Size([1, 2, 32]), torch.Size([1, 3, 32]))
    """

    def __init__(self, config: LNormSeq2SeqConfig):
        super().__init__(config)
        if config.share_embeddings:
            self.shared = nn.Embedding(config.vocab_size, config.hidden_size)
            self.encoder = LNormSeq2SeqEncoder(config, self.shared)
            self.decoder = LNormSeq2SeqDecoder(config, self.shared)
        else:
            self.encoder = LNormSeq2SeqEncoder(config)
            self.decoder = LNormSeq2SeqDecoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        if self.config.share_embeddings:
            self.shared = value
            self.encoder._shared = _SharedModule(value)
            self.decoder._shared = _SharedModule(value)
        else:
            self.encoder.embed_tokens = value

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        decoder_input_ids: Optional[torch.LongTensor] = None,
        decoder_attention_mask: Optional[torch.Tensor] = None,
        encoder_outputs=None,
        past_key_values=None,
        inputs_embeds: Optional[torch.Tensor] = None,
        decoder_inputs_embeds: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache=None,
        **kwargs,
    ) -> Union[Tuple, Seq2SeqModelOutput]:
        """Encode the source (unless ``encoder_outputs`` is given) and decode the target.

        Args:
            input_ids: ``(B, S)`` source ids (or give ``inputs_embeds``).
            attention_mask: ``(B, S)``, 1 for real source tokens, 0 for padding.
            decoder_input_ids: ``(B, T)`` target inputs (or give ``decoder_inputs_embeds``).
            decoder_attention_mask: ``(B, past + T)``, 1 for real target tokens.
            encoder_outputs (transformers.modeling_outputs.BaseModelOutput | tuple | None): precomputed
                encoder output (``generate()`` passes it); the encoder is skipped.
            past_key_values (transformers.EncoderDecoderCache | None): the KV cache (transformers 4.x name).
            inputs_embeds: ``(B, S, hidden)`` instead of ``input_ids``.
            decoder_inputs_embeds: ``(B, T, hidden)`` instead of ``decoder_input_ids``.
            use_cache: return the (updated) cache.
            output_attentions: also return attention weights.
            output_hidden_states: also return hidden states.
            return_dict: return a ``ModelOutput`` rather than a tuple.
            cache (transformers.EncoderDecoderCache | None): the KV cache (transformers 5.x name).
            **kwargs (Any): accepted for ``generate()`` and Trainer compatibility; unused.

        Returns:
            ``Seq2SeqModelOutput``: ``last_hidden_state (B, T, hidden)`` of the decoder, the cache, the
                encoder's last hidden state and optional hidden states / attentions.
        """
        return self._encode_decode(
            {"input_ids": input_ids, "inputs_embeds": inputs_embeds}, attention_mask=attention_mask, encoder_outputs=encoder_outputs,
            decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_attention_mask, decoder_inputs_embeds=decoder_inputs_embeds,
            past_key_values=past_key_values, cache=cache, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=return_dict,
        )


class Seq2SeqHeadMixin:
    """Accessors and ``forward`` body of an encoder-decoder LM head over ``self.model`` (shared with LNormSpeech)."""

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value) -> None:
        self.lm_head = value

    def get_encoder(self, *args, **kwargs) -> nn.Module:
        return self.model.encoder

    def get_decoder(self, *args, **kwargs) -> LNormSeq2SeqDecoder:
        return self.model.decoder

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Teacher-forcing decoder inputs (used by ``DataCollatorForSeq2Seq``)."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def _lm_loss(self, logits: torch.Tensor, labels: torch.Tensor, out: Seq2SeqModelOutput, attention_mask, num_items_in_batch) -> torch.Tensor:
        """Token cross-entropy of ``logits (B, T, V)`` against ``labels (B, T)`` (LNormSpeech adds its CTC loss)."""
        return token_loss(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), num_items_in_batch)

    def _lm_forward(self, encoder_inputs: dict, labels, return_dict, num_items_in_batch, **model_inputs) -> Union[Tuple, Seq2SeqLMOutput]:
        """The body of ``forward``: decoder inputs from ``labels`` if none are given, ``self.model``, logits, loss, output.

        Args:
            encoder_inputs: the encoder's inputs by name (``input_ids`` / ``inputs_embeds``, or ``input_features``).
            labels (torch.Tensor | None): as in ``forward``.
            return_dict (bool | None): as in ``forward``.
            num_items_in_batch (int | torch.Tensor | None): Trainer's token count for gradient accumulation.
            **model_inputs (Any): the other inputs of ``self.model`` (``attention_mask``, ``decoder_input_ids``, ...).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if labels is not None and model_inputs["decoder_input_ids"] is None and model_inputs["decoder_inputs_embeds"] is None:
            model_inputs["decoder_input_ids"] = self.prepare_decoder_input_ids_from_labels(labels)
        out = self.model(**encoder_inputs, **model_inputs, return_dict=True)
        hidden = out.last_hidden_state
        if self.lm_head is None:
            logits = F.linear(hidden, self.model.decoder.get_input_embeddings().weight)
        else:
            logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self._lm_loss(logits, labels.to(logits.device), out, model_inputs["attention_mask"], num_items_in_batch)
        present = out[CACHE_FIELD] if CACHE_FIELD in out else None
        if not return_dict:
            parts = (logits, present, out.decoder_hidden_states, out.decoder_attentions, out.cross_attentions)
            parts += (out.encoder_last_hidden_state, out.encoder_hidden_states, out.encoder_attentions)
            return ((loss,) if loss is not None else ()) + tuple(v for v in parts if v is not None)
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            decoder_hidden_states=out.decoder_hidden_states,
            decoder_attentions=out.decoder_attentions,
            cross_attentions=out.cross_attentions,
            encoder_last_hidden_state=out.encoder_last_hidden_state,
            encoder_hidden_states=out.encoder_hidden_states,
            encoder_attentions=out.encoder_attentions,
            **{CACHE_FIELD: present},
        )


class LNormSeq2SeqForConditionalGeneration(Seq2SeqHeadMixin, LNormSeq2SeqPreTrainedModel, GenerationMixin):
    """LNormSeq2Seq with the output projection over the target vocabulary; for translation and ``generate()``.

    With ``tie_word_embeddings`` the projection *is* the decoder embedding (no separate ``lm_head`` parameter).
    Works with ``AutoModelForSeq2SeqLM``, ``Seq2SeqTrainer`` and ``DataCollatorForSeq2Seq``.

    Args:
        config: the model configuration.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormSeq2SeqConfig, LNormSeq2SeqForConditionalGeneration
        >>> config = LNormSeq2SeqConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
        >>> model = LNormSeq2SeqForConditionalGeneration(config).eval()
        >>> out = model(torch.tensor([[5, 6, 7]]), labels=torch.tensor([[8, 9, 2]]))
        >>> out.logits.shape, out.loss.shape
        (torch.Size([1, 3, 100]), torch.Size([]))
        >>> model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, min_new_tokens=4, num_beams=2).shape
        torch.Size([1, 5])
    """

    def __init__(self, config: LNormSeq2SeqConfig):
        super().__init__(config)
        self.model = LNormSeq2SeqModel(config)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.decoder_vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        decoder_input_ids: Optional[torch.LongTensor] = None,
        decoder_attention_mask: Optional[torch.Tensor] = None,
        encoder_outputs=None,
        past_key_values=None,
        inputs_embeds: Optional[torch.Tensor] = None,
        decoder_inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache=None,
        **kwargs,
    ) -> Union[Tuple, Seq2SeqLMOutput]:
        """Target-token logits; the cross-entropy loss when ``labels`` are given.

        The arguments not listed here are those of ``LNormSeq2SeqModel.forward``.

        Args:
            input_ids: ``(B, S)`` source ids.
            attention_mask: ``(B, S)``, 1 for real source tokens.
            decoder_input_ids: ``(B, T)`` target inputs; built from ``labels`` when both are None.
            decoder_attention_mask: ``(B, past + T)``, 1 for real target tokens.
            encoder_outputs (transformers.modeling_outputs.BaseModelOutput | tuple | None): precomputed encoder output.
            past_key_values (transformers.EncoderDecoderCache | None): the KV cache (transformers 4.x name).
            inputs_embeds: ``(B, S, hidden)`` instead of ``input_ids``.
            decoder_inputs_embeds: ``(B, T, hidden)`` instead of ``decoder_input_ids``.
            labels: ``(B, T)`` target ids (``-100`` ignored). When ``decoder_input_ids`` is ``None`` they are
                built from the labels by ``shift_tokens_right``; position t of the logits predicts ``labels[t]``.
            use_cache: return the (updated) cache.
            output_attentions: also return attention weights.
            output_hidden_states: also return hidden states.
            return_dict: return a ``ModelOutput`` rather than a tuple.
            cache (transformers.EncoderDecoderCache | None): the KV cache (transformers 5.x name).
            **kwargs (Any): ``num_items_in_batch``, Trainer's token count for gradient accumulation; others unused.

        Returns:
            ``Seq2SeqLMOutput`` with ``logits (B, T, decoder_vocab_size)``.
        """
        return self._lm_forward(
            {"input_ids": input_ids, "inputs_embeds": inputs_embeds}, labels, return_dict, kwargs.get("num_items_in_batch"),
            attention_mask=attention_mask, encoder_outputs=encoder_outputs, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, decoder_inputs_embeds=decoder_inputs_embeds, past_key_values=past_key_values,
            cache=cache, use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )


__all__ = [
    "LNormSeq2SeqEncoder",
    "LNormSeq2SeqDecoder",
    "LNormSeq2SeqModel",
    "LNormSeq2SeqForConditionalGeneration",
    "LNormSeq2SeqPreTrainedModel",
    "shift_tokens_right",
]
