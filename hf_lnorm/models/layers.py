"""Shared transformer blocks of the hf_lnorm model families.

Everything a family needs below the model level is reachable from here: the
norm layers (``norm_type`` = ``layernorm`` | ``rmsnorm`` | ``dyt`` | ``none``, defined in
``norm_layers_lnorm.py``), multi-head attention with a KV cache (self- and
cross-attention, SDPA, defined in ``attention_lnorm.py``), the MLP, and the
residual block whose ``norm_position`` (``pre`` | ``post``) decides where the
norms sit. The names of both siblings are re-exported here.

This file is shipped next to saved weights as remote code, so it imports only
torch, transformers and its sibling files. transformers copies only the
siblings a configuration or modeling file imports directly, so every file that
imports this one also imports ``norm_layers_lnorm`` and ``attention_lnorm``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

from .attention_lnorm import (  # noqa: F401  (re-exported)
    LNormAttention,
    build_attention_mask,
    check_heads,
    exporting,
    has_padding,
    new_cache,
    padded_for_export,
    pick_cache,
    position_ids_from,
    prepare_cache,
)
from .norm_layers_lnorm import (  # noqa: F401  (re-exported)
    FUSED_NORMS_AVAILABLE,
    LNormDyT,
    LNormLayerNorm,
    LNormRMSNorm,
    Passthrough,
    check_dyt_alpha_init,
    use_fused_norms,
)

try:  # transformers 5.x: init functions that skip tensors already loaded from a checkpoint
    from transformers import initialization as _init
except ImportError:  # transformers 4.x
    from torch.nn import init as _init


NORM_TYPES = ("layernorm", "rmsnorm", "dyt", "none")
NORM_POSITIONS = ("pre", "post")

# transformers 5.x renamed the cache field of the model outputs from `past_key_values` to `cache`.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


# --------------------------------------------------------------------------- validation


def check_choice(name: str, value, accepted: Sequence) -> None:
    """Raise ``ValueError`` naming ``value`` and the accepted ones unless ``value in accepted``.

    Args:
        name: the option's name, used in the message.
        value (object): the value given.
        accepted: the values that are allowed.

    Raises:
        ValueError: ``value`` is not in ``accepted``.
    """
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not supported; accepted values: {', '.join(repr(a) for a in accepted)}")


def set_stack_fields(
    config,
    hidden_size: int,
    num_hidden_layers: int,
    num_attention_heads: int,
    mlp_ratio: float,
    intermediate_size: Optional[int],
    hidden_act: str,
    dropout: float,
    attention_dropout: float,
    norm_type: str,
    norm_position: str,
    layer_norm_eps: float,
    initializer_range: float,
    dyt_alpha_init: float = 0.5,
) -> None:
    """Validate a family config's transformer-stack arguments and set them on ``config``.

    These are the fields ``build_stack`` and ``init_weights`` read; every family config takes
    them under the same names. ``intermediate_size`` defaults to ``round(mlp_ratio * hidden_size)``.

    Raises:
        ValueError: ``hidden_size`` does not split into ``num_attention_heads`` heads, ``norm_type`` /
            ``norm_position`` is not one of ``NORM_TYPES`` / ``NORM_POSITIONS``, or ``dyt_alpha_init`` is
            not a positive finite float.
    """
    check_heads(hidden_size, num_attention_heads)
    check_choice("norm_type", norm_type, NORM_TYPES)
    check_choice("norm_position", norm_position, NORM_POSITIONS)
    config.dyt_alpha_init = check_dyt_alpha_init(dyt_alpha_init)
    config.hidden_size = hidden_size
    config.num_hidden_layers = num_hidden_layers
    config.num_attention_heads = num_attention_heads
    config.mlp_ratio = mlp_ratio
    config.intermediate_size = intermediate_size if intermediate_size is not None else int(round(mlp_ratio * hidden_size))
    config.hidden_act = hidden_act
    config.dropout = dropout
    config.attention_dropout = attention_dropout
    config.norm_type = norm_type
    config.norm_position = norm_position
    config.layer_norm_eps = layer_norm_eps
    config.initializer_range = initializer_range


# --------------------------------------------------------------------------- norms and MLP


def build_norm(norm_type: str, hidden_size: int, eps: float, dyt_alpha_init: float = 0.5) -> nn.Module:
    """Build the norm layer for ``norm_type`` (``layernorm`` | ``rmsnorm`` | ``dyt`` | ``none``).

    Args:
        norm_type: which normalization.
        hidden_size: size of the normalized (last) dimension.
        eps: added to the variance for stability (not used by ``dyt`` and ``none``).
        dyt_alpha_init: starting value of DyT's learnable ``alpha`` (``dyt`` only).

    Returns:
        An ``LNormLayerNorm``, ``LNormRMSNorm``, ``LNormDyT`` or ``Passthrough`` module.
    """
    check_choice("norm_type", norm_type, NORM_TYPES)
    if norm_type == "layernorm":
        return LNormLayerNorm(hidden_size, eps=eps)
    if norm_type == "rmsnorm":
        return LNormRMSNorm(hidden_size, eps=eps)
    if norm_type == "dyt":
        return LNormDyT(hidden_size, alpha_init=dyt_alpha_init)
    return Passthrough()


class LNormMLP(nn.Module):
    """Position-wise feed-forward: ``fc_out(act(fc_in(x)))``."""

    def __init__(self, hidden_size: int, intermediate_size: int, activation: str, bias: bool = True):
        super().__init__()
        if activation not in ACT2FN:
            raise ValueError(f"hidden_act={activation!r} is not supported; accepted values: {', '.join(sorted(ACT2FN))}")
        self.fc_in = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.act = ACT2FN[activation]
        self.fc_out = nn.Linear(intermediate_size, hidden_size, bias=bias)
        self.fc_out.is_residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


# --------------------------------------------------------------------------- block


class LNormBlock(GradientCheckpointingLayer):
    """One transformer layer: self-attention, optional cross-attention, MLP, each with a residual and a norm.

    ``norm_position="pre"`` (GPT-2 style): ``x = x + f(norm(x))``; the model adds a final norm.
    ``norm_position="post"`` (original Transformer): ``x = norm(x + f(x))``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        dropout: float,
        attention_dropout: float,
        norm_type: str,
        norm_position: str,
        eps: float,
        layer_idx: int,
        activation: str = "gelu",
        causal: bool = True,
        cross_attention: bool = False,
        dyt_alpha_init: float = 0.5,
    ):
        super().__init__()
        check_choice("norm_position", norm_position, NORM_POSITIONS)
        self.pre_norm = norm_position == "pre"
        self.causal = causal
        self.attn_norm = build_norm(norm_type, hidden_size, eps, dyt_alpha_init)
        self.attn = LNormAttention(hidden_size, num_heads, attention_dropout, layer_idx)
        self.cross_attn = None
        if cross_attention:
            self.cross_attn_norm = build_norm(norm_type, hidden_size, eps, dyt_alpha_init)
            self.cross_attn = LNormAttention(hidden_size, num_heads, attention_dropout, layer_idx, is_cross_attention=True)
        self.mlp_norm = build_norm(norm_type, hidden_size, eps, dyt_alpha_init)
        self.mlp = LNormMLP(hidden_size, intermediate_size, activation)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        is_causal: bool = False,
        cache: Optional[Cache] = None,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        encoder_attention_mask: Optional[torch.Tensor] = None,
        output_attentions: bool = False,
    ):
        """Run the layer.

        Args:
            hidden_states: ``(B, T, hidden)``.
            attention_mask: self-attention mask (see ``build_attention_mask``).
            is_causal: let SDPA apply its own causal mask.
            cache: a ``Cache`` (decoder-only) or an ``EncoderDecoderCache`` (seq2seq decoder), or ``None``.
            encoder_hidden_states: ``(B, S, hidden)`` for cross-attention.
            encoder_attention_mask: boolean ``(B, 1, 1, S)`` mask over the encoder output.
            output_attentions: also return attention weights.

        Returns:
            (tuple): ``(hidden_states, self_attention_weights, cross_attention_weights)``.
        """
        self_cache = cache.self_attention_cache if isinstance(cache, EncoderDecoderCache) else cache
        x = hidden_states
        cross_weights = None
        if self.pre_norm:
            h, self_weights = self.attn(self.attn_norm(x), attention_mask, is_causal, self_cache, output_attentions=output_attentions)
            if self.cross_attn is not None:
                normed, x = self.cross_attn_norm.add_forward(self.dropout(h), x)
                h, cross_weights = self.cross_attn(
                    normed, encoder_attention_mask, False, cache, encoder_hidden_states, output_attentions=output_attentions
                )
            normed, x = self.mlp_norm.add_forward(self.dropout(h), x)
            x = x + self.dropout(self.mlp(normed))
        else:
            h, self_weights = self.attn(x, attention_mask, is_causal, self_cache, output_attentions=output_attentions)
            x = self.attn_norm.add_forward(self.dropout(h), x)[0]
            if self.cross_attn is not None:
                h, cross_weights = self.cross_attn(
                    x, encoder_attention_mask, False, cache, encoder_hidden_states, output_attentions=output_attentions
                )
                x = self.cross_attn_norm.add_forward(self.dropout(h), x)[0]
            x = self.mlp_norm.add_forward(self.dropout(self.mlp(x)), x)[0]
        return x, self_weights, cross_weights


def build_stack(config, num_layers: int, causal: bool, cross_attention: bool = False):
    """The blocks of one transformer stack and its final norm.

    Args:
        config (transformers.PretrainedConfig): a family config (the fields ``set_stack_fields`` sets).
        num_layers: number of blocks.
        causal: causal self-attention (decoders).
        cross_attention: add cross-attention to an encoder output (seq2seq decoders).

    Returns:
        (tuple[nn.ModuleList, nn.Module]): ``(layers, final_norm)``: an ``nn.ModuleList`` of ``LNormBlock`` and the
            norm applied after the last block (pre-LN only; post-LN blocks already
            end in a norm, so it is a ``Passthrough`` there).
    """
    layers = nn.ModuleList(
        [
            LNormBlock(
                config.hidden_size,
                config.num_attention_heads,
                config.intermediate_size,
                config.dropout,
                config.attention_dropout,
                config.norm_type,
                config.norm_position,
                config.layer_norm_eps,
                layer_idx=i,
                activation=config.hidden_act,
                causal=causal,
                cross_attention=cross_attention,
                dyt_alpha_init=config.dyt_alpha_init,
            )
            for i in range(num_layers)
        ]
    )
    pre = config.norm_position == "pre"
    final_norm = build_norm(config.norm_type, config.hidden_size, config.layer_norm_eps, config.dyt_alpha_init) if pre else Passthrough()
    return layers, final_norm


def run_stack(
    layers: nn.ModuleList,
    final_norm: nn.Module,
    hidden: torch.Tensor,
    output_attentions: bool,
    output_hidden_states: bool,
    attention_mask: Optional[torch.Tensor] = None,
    is_causal: bool = False,
    cache: Optional[Cache] = None,
    encoder_hidden_states: Optional[torch.Tensor] = None,
    encoder_attention_mask: Optional[torch.Tensor] = None,
):
    """Run the blocks of ``build_stack`` and the final norm, collecting what the ``output_*`` flags ask for.

    The block arguments are passed positionally: under gradient checkpointing with
    ``use_reentrant=True`` only positional tensors are inputs of the checkpoint, and a
    keyword tensor such as the encoder states would be back-propagated once per block
    (autograd's "backward through the graph a second time").

    Args:
        layers: the blocks ``build_stack`` returned.
        final_norm: the final norm ``build_stack`` returned.
        hidden: ``(B, T, hidden)`` input of the first block.
        output_attentions: collect each block's attention weights.
        output_hidden_states: collect the input of every block and the final (normed) output.
        attention_mask: passed to every ``LNormBlock`` (see its ``forward``).
        is_causal: passed to every block.
        cache: passed to every block.
        encoder_hidden_states: passed to every block.
        encoder_attention_mask: passed to every block.

    Returns:
        (tuple): ``(hidden, all_hidden, all_attn, all_cross)``: the output and, when asked for, tuples of hidden states,
            self-attention weights and cross-attention weights (``None`` entries without cross-attention); else ``None``.
    """
    all_hidden = () if output_hidden_states else None
    all_attn = () if output_attentions else None
    all_cross = () if output_attentions else None
    for block in layers:
        if output_hidden_states:
            all_hidden += (hidden,)
        hidden, weights, cross = block(hidden, attention_mask, is_causal, cache, encoder_hidden_states, encoder_attention_mask,
                                       output_attentions)
        if output_attentions:
            all_attn += (weights,)
            all_cross += (cross,)
    hidden = final_norm(hidden)
    if output_hidden_states:
        all_hidden += (hidden,)
    return hidden, all_hidden, all_attn, all_cross


# --------------------------------------------------------------------------- shared model helpers


def output_flags(config, output_attentions: Optional[bool], output_hidden_states: Optional[bool], return_dict: Optional[bool]):
    """``(output_attentions, output_hidden_states, return_dict)`` of a forward, each ``None`` replaced by ``config``'s value."""
    output_attentions = bool(output_attentions if output_attentions is not None else config.output_attentions)
    output_hidden_states = bool(output_hidden_states if output_hidden_states is not None else config.output_hidden_states)
    return_dict = return_dict if return_dict is not None else config.return_dict
    return output_attentions, output_hidden_states, return_dict


def init_weights(module: nn.Module, std: float, num_layers: int) -> None:
    """GPT-2 initialization: normal(0, std) weights, zero biases, norms at weight 1 / bias 0.

    DyT layers: ``alpha`` at its ``alpha_init``, ``weight`` 1, ``bias`` 0.

    Projections that write into the residual stream (``is_residual_projection``) get
    ``std / sqrt(2 * num_layers)`` so the stream's variance does not grow with depth.

    Args:
        module: one module (called by ``PreTrainedModel`` for every submodule).
        std: ``config.initializer_range``.
        num_layers: number of residual blocks the projections are summed over.
    """
    if isinstance(module, nn.Linear):
        scale = (2 * max(num_layers, 1)) ** -0.5 if getattr(module, "is_residual_projection", False) else 1.0
        _init.normal_(module.weight, mean=0.0, std=std * scale)
        if module.bias is not None:
            _init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        _init.normal_(module.weight, mean=0.0, std=std)
    elif isinstance(module, (nn.LayerNorm, nn.RMSNorm, LNormRMSNorm, LNormDyT)):
        if module.weight is not None:
            _init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            _init.zeros_(module.bias)
        if isinstance(module, LNormDyT):
            _init.constant_(module.alpha, module.alpha_init)


def check_context(total_length: int, position_ids: Optional[torch.Tensor], max_positions: int) -> None:
    """Raise a clear ``ValueError`` when the input does not fit the learned position table.

    Args:
        total_length: cached plus new tokens.
        position_ids: caller-given positions of the new tokens (``None`` when derived, which never exceed
            ``total_length - 1``).
        max_positions: ``config.max_position_embeddings``.
    """
    too_far = position_ids is not None and position_ids.numel() and int(position_ids.max()) >= max_positions
    if total_length > max_positions or too_far:
        raise ValueError(
            f"input of {total_length} tokens (cached + new) is longer than the context length "
            f"max_position_embeddings={max_positions}; truncate it (e.g. tokenizer(..., truncation=True, "
            f"max_length={max_positions})) or lower max_new_tokens"
        )


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Next-token cross-entropy: position t predicts ``labels[t + 1]``; ``-100`` is ignored.

    Args:
        logits: ``(B, T, V)``.
        labels: ``(B, T)``.
        num_items_in_batch (int | torch.Tensor | None): when given (Trainer with gradient accumulation),
            the sum is divided by it.

    Returns:
        Scalar loss.
    """
    shifted = labels[:, 1:].to(logits.device)
    flat = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return token_loss(flat, shifted.reshape(-1), num_items_in_batch)


def token_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Cross-entropy over flat ``(N, V)`` logits and ``(N,)`` labels, mean or sum / ``num_items_in_batch``."""
    if num_items_in_batch is None:
        return F.cross_entropy(logits.float(), labels, ignore_index=-100)
    total = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def sequence_classification_loss(config, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The transformers convention: regression, single- or multi-label classification by ``config.problem_type``."""
    num_labels = logits.shape[-1]
    labels = labels.to(logits.device)
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1)) if num_labels == 1 else F.mse_loss(logits.float(), labels.float())
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.float().view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
