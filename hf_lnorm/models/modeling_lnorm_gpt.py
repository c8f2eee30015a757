"""LNormGPT: a GPT-style decoder as a Hugging Face model, with switchable normalization.

A GPT-2-shaped decoder (learned absolute positions, SDPA attention, KV cache)
whose norms are chosen by ``config.norm_type`` (layernorm | rmsnorm | dyt | none) and
placed by ``config.norm_position`` (pre | post). Heads: ``LNormGPTModel`` (the
backbone), ``LNormGPTForCausalLM`` (``generate()`` with a KV cache; also the
ImageGPT mode over color-cluster tokens) and
``LNormGPTForSequenceClassification``.

PEFT/LoRA ``target_modules``: ``qkv_proj`` and ``out_proj`` (attention),
``fc_in`` and ``fc_out`` (MLP).

The KV cache travels as ``past_key_values`` (transformers 4.x) or ``cache``
(transformers 5.x); ``forward`` accepts both names, so ``generate()`` uses the
cache under either version.

Shipped next to saved weights as remote code: imports only torch, transformers
and sibling files.

Examples:
    >>> import torch
    >>> from hf_lnorm.models import LNormGPTConfig, LNormGPTForCausalLM
    >>> model = LNormGPTForCausalLM(LNormGPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4))
    >>> model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=5, do_sample=False).shape
    torch.Size([1, 8])
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, SequenceClassifierOutputWithPast

from .configuration_lnorm_gpt import LNormGPTConfig
# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import (
    CACHE_FIELD,
    build_attention_mask,
    build_stack,
    causal_lm_loss,
    check_context,
    has_padding,
    init_weights,
    output_flags,
    position_ids_from,
    prepare_cache,
    run_stack,
    sequence_classification_loss,
)
from .modeling_utils_lnorm import model_output
from .remote_code import RemoteCodeMixin


class LNormGPTPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    """Weight init, Auto-class wiring and remote-code saving shared by the LNormGPT heads.

    Linear and embedding weights are drawn from a normal with std
    ``config.initializer_range`` (residual output projections scaled down with
    depth), norm gains start at 1 and biases at 0. ``save_pretrained`` writes
    the modeling code and a complete ``auto_map`` next to the weights, so the
    folder loads with ``trust_remote_code=True`` where hf_lnorm is not installed.

    Examples:
        ```python
        from transformers import AutoModelForCausalLM
        from hf_lnorm.models import LNormGPTConfig, LNormGPTForCausalLM

        LNormGPTForCausalLM(LNormGPTConfig()).save_pretrained("my-gpt")
        # elsewhere, without hf_lnorm installed:
        model = AutoModelForCausalLM.from_pretrained("my-gpt", trust_remote_code=True)
        ```
    """

    config_class = LNormGPTConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LNormBlock"]
    _supports_sdpa = True
    _supports_cache_class = True
    auto_map_classes = {
        "AutoConfig": "configuration_lnorm_gpt.LNormGPTConfig",
        "AutoModel": "modeling_lnorm_gpt.LNormGPTModel",
        "AutoModelForCausalLM": "modeling_lnorm_gpt.LNormGPTForCausalLM",
        "AutoModelForSequenceClassification": "modeling_lnorm_gpt.LNormGPTForSequenceClassification",
    }
    card_description = (
        "LNormGPT: a GPT-style decoder-only transformer from the hf_lnorm package, built to study layer "
        "normalization (the normalization type and its position are configuration flags)."
    )
    card_intended_use = (
        "Small-scale language modelling and LayerNorm ablations (pre-LN vs post-LN, LayerNorm vs RMSNorm vs none). "
        "Not intended for production text generation: the model is small and its output is not filtered."
    )
    card_pipeline_tag = "text-generation"
    card_config_keys = (
        "vocab_size",
        "max_position_embeddings",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "dropout",
        "tie_word_embeddings",
        "image_size",
    )

    def _init_weights(self, module: nn.Module) -> None:
        init_weights(module, self.config.initializer_range, self.config.num_hidden_layers)


class LNormGPTModel(LNormGPTPreTrainedModel):
    """The LNormGPT backbone: token + position embeddings, blocks, final norm (pre-LN only).

    Args:
        config: the model configuration.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormGPTConfig, LNormGPTModel
        >>> model = LNormGPTModel(LNormGPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                                      num_attention_heads=4))
        >>> out = model(torch.tensor([[5, 6, 7, 8]]), attention_mask=torch.ones(1, 4, dtype=torch.long))
        >>> out.last_hidden_state.shape
        torch.Size([1, 4, 32])
    """

    def __init__(self, config: LNormGPTConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers, self.final_norm = build_stack(config, config.num_hidden_layers, causal=True)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values=None,
        inputs_embeds: Optional[torch.Tensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache=None,
        **kwargs,
    ) -> Union[Tuple, BaseModelOutputWithPast]:
        """Run the backbone.

        Args:
            input_ids: ``(B, T)`` token ids (or give ``inputs_embeds``).
            attention_mask: ``(B, past + T)`` with 1 for real tokens, 0 for padding.
            position_ids: ``(B, T)``; derived from the mask and cache length when ``None``.
            past_key_values (transformers.Cache | None): the KV cache (transformers 4.x name).
            inputs_embeds: ``(B, T, hidden)`` instead of ``input_ids``.
            use_cache: return the (updated) cache; defaults to ``config.use_cache`` outside training.
            output_attentions: also return each block's attention weights.
            output_hidden_states: also return the hidden states (embeddings + one per block).
            return_dict: return a ``ModelOutput`` (default ``config.return_dict``) rather than a tuple.
            cache (transformers.Cache | None): the KV cache (transformers 5.x name); give one of the two names.
            **kwargs (Any): accepted for compatibility with ``generate()`` and Trainer; unused.

        Returns:
            ``BaseModelOutputWithPast``: ``last_hidden_state (B, T, hidden)``, the cache, optional hidden states
                (embeddings + one per block) and attentions ``(B, heads, T, past + T)``.

        Raises:
            ValueError: both or neither of ``input_ids`` and ``inputs_embeds``, or positions beyond
                ``config.max_position_embeddings``.
        """
        config = self.config
        output_attentions, output_hidden_states, return_dict = output_flags(config, output_attentions, output_hidden_states, return_dict)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch, length = inputs_embeds.shape[:2]
        cache, past_len = prepare_cache(self, past_key_values, cache, use_cache)

        padded = has_padding(attention_mask)
        check_context(past_len + length, position_ids, config.max_position_embeddings)
        if position_ids is None:
            position_ids = position_ids_from(attention_mask, batch, length, past_len, inputs_embeds.device, padded)
        hidden = self.dropout(inputs_embeds + self.embed_positions(position_ids))
        mask, is_causal = build_attention_mask(attention_mask, length, past_len, causal=True, padded=padded)
        hidden, all_hidden, all_attn, _ = run_stack(
            self.layers, self.final_norm, hidden, output_attentions, output_hidden_states, attention_mask=mask, is_causal=is_causal, cache=cache
        )

        return model_output(BaseModelOutputWithPast, return_dict, last_hidden_state=hidden, **{CACHE_FIELD: cache},
                            hidden_states=all_hidden, attentions=all_attn)


class GPTHeadMixin:
    """Accessors and the shared ``forward`` steps of a head over ``self.transformer`` (an ``LNormGPTModel``)."""

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.transformer.embed_tokens = value

    def _transformer_outputs(
        self, input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache, output_attentions, output_hidden_states, cache
    ) -> BaseModelOutputWithPast:
        """Run the backbone on the head's inputs (see ``LNormGPTModel.forward``), always returning a ``BaseModelOutputWithPast``."""
        return self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            cache=cache,
        )

    @staticmethod
    def _head_output(output_class, loss: Optional[torch.Tensor], logits: torch.Tensor, out: BaseModelOutputWithPast, return_dict: bool):
        """``output_class`` (or the equivalent tuple) holding ``loss``, ``logits`` and the backbone's cache, hidden states, attentions."""
        present = out[CACHE_FIELD] if CACHE_FIELD in out else None
        if not return_dict:
            rest = tuple(v for v in (present, out.hidden_states, out.attentions) if v is not None)
            return ((loss,) if loss is not None else ()) + (logits,) + rest
        return output_class(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions, **{CACHE_FIELD: present})


class LNormGPTForCausalLM(GPTHeadMixin, LNormGPTPreTrainedModel, GenerationMixin):
    """LNormGPT with a language-modelling head (tied to the token embedding by default).

    Supports ``generate()`` with a KV cache and Trainer's loss scaling for
    gradient accumulation. With ``config.image_size`` set it is an ImageGPT
    model (see ``ImageGPTColorProcessor`` and ``complete_images``).

    Args:
        config: the model configuration.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormGPTConfig, LNormGPTForCausalLM
        >>> model = LNormGPTForCausalLM(LNormGPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                                            num_attention_heads=4))
        >>> ids = torch.tensor([[5, 6, 7, 8]])
        >>> out = model(ids, labels=ids)
        >>> out.logits.shape, out.loss.shape
        (torch.Size([1, 4, 100]), torch.Size([]))
    """

    _tied_weights_keys = {"lm_head.weight": "transformer.embed_tokens.weight"}

    def __init__(self, config: LNormGPTConfig):
        super().__init__(config)
        self.transformer = LNormGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values=None,
        inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        logits_to_keep: int = 0,
        cache=None,
        **kwargs,
    ) -> Union[Tuple, CausalLMOutputWithPast]:
        """Next-token logits (and the shifted cross-entropy loss when ``labels`` are given).

        The arguments not listed here are those of ``LNormGPTModel.forward``.

        Args:
            input_ids: ``(B, T)`` token ids (or give ``inputs_embeds``).
            attention_mask: ``(B, past + T)`` with 1 for real tokens, 0 for padding.
            position_ids: ``(B, T)``; derived from the mask and cache length when ``None``.
            past_key_values (transformers.Cache | None): the KV cache (transformers 4.x name).
            inputs_embeds: ``(B, T, hidden)`` instead of ``input_ids``.
            labels: ``(B, T)`` target ids, usually ``input_ids``; ``-100`` is ignored. The shift is done here.
            use_cache: return the (updated) cache.
            output_attentions: also return attention weights.
            output_hidden_states: also return hidden states.
            return_dict: return a ``ModelOutput`` rather than a tuple.
            logits_to_keep: if > 0, compute logits for the last ``logits_to_keep`` positions only (generation).
            cache (transformers.Cache | None): the KV cache (transformers 5.x name).
            **kwargs (Any): ``num_items_in_batch``, Trainer's token count for gradient accumulation; others unused.

        Returns:
            ``CausalLMOutputWithPast`` with ``logits (B, T, vocab_size)``, ``loss`` and the cache.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self._transformer_outputs(
            input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache, output_attentions, output_hidden_states, cache
        )
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = causal_lm_loss(logits, labels, kwargs.get("num_items_in_batch")) if labels is not None else None
        return self._head_output(CausalLMOutputWithPast, loss, logits, out, return_dict)


class LNormGPTForSequenceClassification(GPTHeadMixin, LNormGPTPreTrainedModel):
    """LNormGPT with a linear head on the last real token (GPT-2 style sequence classification).

    Args:
        config: the model configuration (``num_labels``, ``problem_type`` and
            ``pad_token_id`` matter here).

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormGPTConfig, LNormGPTForSequenceClassification
        >>> config = LNormGPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                         num_labels=3, pad_token_id=0)
        >>> model = LNormGPTForSequenceClassification(config)
        >>> out = model(torch.tensor([[5, 6, 7, 0], [5, 6, 0, 0]]), labels=torch.tensor([2, 0]))
        >>> out.logits.shape, out.loss.shape
        (torch.Size([2, 3]), torch.Size([]))
    """

    def __init__(self, config: LNormGPTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = LNormGPTModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values=None,
        inputs_embeds: Optional[torch.Tensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache=None,
        **kwargs,
    ) -> Union[Tuple, SequenceClassifierOutputWithPast]:
        """Classify each sequence from the hidden state of its last real token.

        The last real token is the last position with ``attention_mask == 1``; without a mask, the last
        token that is not ``config.pad_token_id`` (right padding); without either, the last position.

        The arguments not listed here are those of ``LNormGPTModel.forward``.

        Args:
            input_ids: ``(B, T)`` token ids (or give ``inputs_embeds``).
            attention_mask: ``(B, T)`` with 1 for real tokens, 0 for padding.
            position_ids: ``(B, T)`` positions; derived from the mask when ``None``.
            past_key_values (transformers.Cache | None): a KV cache (transformers 4.x name).
            inputs_embeds: ``(B, T, hidden)`` instead of ``input_ids``.
            labels: ``(B,)`` class ids (``num_labels > 1``), floats for regression (``num_labels == 1``),
                or ``(B, num_labels)`` multi-hot floats (``problem_type="multi_label_classification"``).
            use_cache: return the cache.
            output_attentions: also return attention weights.
            output_hidden_states: also return hidden states.
            return_dict: return a ``ModelOutput`` rather than a tuple.
            cache (transformers.Cache | None): a KV cache (transformers 5.x name).
            **kwargs (Any): accepted for Trainer compatibility; unused.

        Returns:
            ``SequenceClassifierOutputWithPast`` with ``logits (B, num_labels)``.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self._transformer_outputs(
            input_ids, attention_mask, position_ids, past_key_values, inputs_embeds, use_cache, output_attentions, output_hidden_states, cache
        )
        token_logits = self.score(out.last_hidden_state)  # (B, T, num_labels)
        batch, length = token_logits.shape[:2]
        if attention_mask is not None and attention_mask.dim() == 2:
            positions = torch.arange(attention_mask.shape[-1], device=token_logits.device)
            last = (positions * attention_mask.to(token_logits.device).long()).argmax(-1) - (attention_mask.shape[-1] - length)
        elif input_ids is not None and self.config.pad_token_id is not None:
            real = (input_ids != self.config.pad_token_id).long()
            last = (torch.arange(length, device=token_logits.device) * real).argmax(-1)
        else:
            last = torch.full((batch,), length - 1, device=token_logits.device, dtype=torch.long)
        logits = token_logits[torch.arange(batch, device=token_logits.device), last.clamp(min=0)]
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(self.config, logits, labels)
        return self._head_output(SequenceClassifierOutputWithPast, loss, logits, out, return_dict)


__all__ = ["LNormGPTModel", "LNormGPTForCausalLM", "LNormGPTForSequenceClassification", "LNormGPTPreTrainedModel"]
