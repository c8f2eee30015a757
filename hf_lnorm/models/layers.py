"""Shared transformer blocks of the hf_lnorm model families.

Everything a family needs below the model level lives here: the norm layers
(``norm_type`` = ``layernorm`` | ``rmsnorm`` | ``none``), multi-head attention
with a KV cache (self- and cross-attention, SDPA), the MLP, and the residual
block whose ``norm_position`` (``pre`` | ``post``) decides where the norms sit.

This file is shipped next to saved weights as remote code, so it imports only
torch, transformers and its sibling files. hf_lnorm's fused norm kernels are an
optional import: when ``hf_lnorm.norms.ops`` is importable the norms use it in
eager runs and under ``torch.compile``, otherwise they use plain torch, which
gives the same numbers. The choice is made per call (``use_fused_norms``): while
a graph is recorded (``torch.fx``, ``torch.jit`` tracing or scripting,
``torch.export``, ONNX export) the norms record the plain-torch ops, so the
graph holds standard ops only.

The norm modules (``LNormLayerNorm``, an ``nn.LayerNorm``; ``LNormRMSNorm``, a
Llama-convention RMSNorm) keep plain parameters (``weight``, ``bias``), so ``hf_lnorm.patch`` recognises and patches
them like any other norm. A block asks a norm for ``add_forward(x, residual)``
(residual add + norm in one op); when the norm's ``forward`` has been replaced
on the instance (by ``hf_lnorm.patch``, an accelerate hook, ...), that forward
is used instead, so patching always takes effect.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast

try:  # transformers 5.x: init functions that skip tensors already loaded from a checkpoint
    from transformers import initialization as _init
except ImportError:  # transformers 4.x
    from torch.nn import init as _init

try:
    from torch._subclasses.fake_tensor import is_fake as _is_fake
except ImportError:  # pragma: no cover
    def _is_fake(x) -> bool:
        return False

try:  # optional: hf_lnorm's fused kernels; the plain-torch path below computes the same numbers
    from hf_lnorm.norms.ops import add_layer_norm as _fused_add_layer_norm
    from hf_lnorm.norms.ops import add_rms_norm as _fused_add_rms_norm
    from hf_lnorm.norms.ops import layer_norm as _fused_layer_norm
    from hf_lnorm.norms.ops import rms_norm as _fused_rms_norm

    FUSED_NORMS_AVAILABLE = True
except ImportError:
    FUSED_NORMS_AVAILABLE = False


NORM_TYPES = ("layernorm", "rmsnorm", "none")
NORM_POSITIONS = ("pre", "post")

# transformers 5.x renamed the cache field of the model outputs from `past_key_values` to `cache`.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


# --------------------------------------------------------------------------- validation


def check_choice(name: str, value, accepted: Sequence) -> None:
    """Raise ``ValueError`` naming ``value`` and the accepted ones unless ``value in accepted``.

    Args:
        name: the option's name, used in the message.
        value: the value given.
        accepted: the values that are allowed.
    """
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not supported; accepted values: {', '.join(repr(a) for a in accepted)}")


def check_heads(hidden_size: int, num_attention_heads: int) -> None:
    """Raise ``ValueError`` unless ``hidden_size`` splits evenly into ``num_attention_heads`` heads."""
    if num_attention_heads <= 0 or hidden_size % num_attention_heads != 0:
        raise ValueError(
            f"hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}; "
            f"choose a hidden_size that is a multiple of the number of heads"
        )


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
) -> None:
    """Validate a family config's transformer-stack arguments and set them on ``config``.

    These are the fields ``build_stack`` and ``init_weights`` read; every family config takes
    them under the same names. ``intermediate_size`` defaults to ``round(mlp_ratio * hidden_size)``.

    Raises:
        ValueError: ``hidden_size`` does not split into ``num_attention_heads`` heads, or ``norm_type`` /
            ``norm_position`` is not one of ``NORM_TYPES`` / ``NORM_POSITIONS``.
    """
    check_heads(hidden_size, num_attention_heads)
    check_choice("norm_type", norm_type, NORM_TYPES)
    check_choice("norm_position", norm_position, NORM_POSITIONS)
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


def pick_cache(past_key_values: Optional[Cache], cache: Optional[Cache]) -> Optional[Cache]:
    """Merge the two names the KV cache travels under (``past_key_values`` up to transformers 4.x, ``cache`` in 5.x).

    Args:
        past_key_values: the cache under its transformers 4.x name.
        cache: the cache under its transformers 5.x name.

    Returns:
        The one that was given (or ``None``). Tuple caches are converted to a ``DynamicCache``.
    """
    if past_key_values is not None and cache is not None and past_key_values is not cache:
        raise ValueError("got both `past_key_values` and `cache`; pass the KV cache under one name only")
    found = cache if cache is not None else past_key_values
    if isinstance(found, (tuple, list)):
        raise TypeError("tuple KV caches are not supported; pass a transformers `DynamicCache` (or `EncoderDecoderCache`)")
    return found


# --------------------------------------------------------------------------- norms


def use_fused_norms(x) -> bool:
    """Whether a norm runs hf_lnorm's fused ops on ``x`` in this call: they are importable and this thread
    is not recording a graph (fx Proxy input, ``torch.jit`` tracing or scripting, which torch.onnx's
    TorchScript exporter uses, or ``torch.export``, which its dynamo exporter uses)."""
    if not FUSED_NORMS_AVAILABLE or isinstance(x, torch.fx.Proxy) or torch.jit.is_scripting() or torch.jit.is_tracing():
        return False
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.6
    if is_exporting is not None and is_exporting():
        # the flag is process-wide; this thread exports when it traces x (dynamo, or fake tensors)
        return not (torch.compiler.is_dynamo_compiling() or _is_fake(x))
    return True


class LNormLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension, with an optional fused residual-add path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_fused_norms(x):
            return _fused_layer_norm(x, self.weight, self.bias, self.eps)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(norm(x + residual), x + residual)``."""
        if "forward" not in self.__dict__ and use_fused_norms(x):
            return _fused_add_layer_norm(x, residual, self.weight, self.bias, self.eps)
        summed = x + residual
        return self(summed), summed


class LNormRMSNorm(nn.Module):
    """RMSNorm over the last dimension with a learned gain, Llama casting convention.

    Statistics in fp32, the normalized value cast back to the input dtype, then multiplied by
    ``weight`` (the convention of ``hf_lnorm.norms.ops.rms_norm``, so both paths agree in every dtype).
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5):
        super().__init__()
        self.normalized_shape = (hidden_size,)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_fused_norms(x):
            return _fused_rms_norm(x, self.weight, self.eps)
        xf = x.float()
        normed = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return self.weight * normed

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(norm(x + residual), x + residual)``."""
        if "forward" not in self.__dict__ and use_fused_norms(x):
            return _fused_add_rms_norm(x, residual, self.weight, self.eps)
        summed = x + residual
        return self(summed), summed

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class Passthrough(nn.Module):
    """``norm_type="none"``: no normalization, the same interface as the norms."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        summed = x + residual
        return summed, summed


def build_norm(norm_type: str, hidden_size: int, eps: float) -> nn.Module:
    """Build the norm layer for ``norm_type`` (``layernorm`` | ``rmsnorm`` | ``none``).

    Args:
        norm_type: which normalization.
        hidden_size: size of the normalized (last) dimension.
        eps: added to the variance for stability.

    Returns:
        An ``LNormLayerNorm``, ``LNormRMSNorm`` or ``Passthrough`` module.
    """
    check_choice("norm_type", norm_type, NORM_TYPES)
    if norm_type == "layernorm":
        return LNormLayerNorm(hidden_size, eps=eps)
    if norm_type == "rmsnorm":
        return LNormRMSNorm(hidden_size, eps=eps)
    return Passthrough()


# --------------------------------------------------------------------------- masks and positions


def exporting() -> bool:
    """Inside an exporter's trace (torch.jit tracing for Optimum, torch.export for torch.onnx dynamo).

    Masks built there must not depend on the values in them, so callers take the
    masking branch unconditionally. Plain ``torch.compile`` is not exporting: it
    keeps the mask-free fast path.
    """
    is_exporting = getattr(torch.compiler, "is_exporting", None)  # torch >= 2.6
    return torch.jit.is_tracing() or (is_exporting() if is_exporting is not None else torch.compiler.is_compiling())


def has_padding(padding_mask: Optional[torch.Tensor]) -> bool:
    """Whether a 2D 0/1 mask marks any position as padding (``False`` for ``None``)."""
    return padding_mask is not None and padding_mask.dim() == 2 and not bool(padding_mask.all())


def padded_for_export(padding_mask: Optional[torch.Tensor]) -> Optional[bool]:
    """The ``padded`` argument of the mask helpers: ``True`` under an exporter's trace when a 2D mask is given.

    That keeps the masking branch in the graph without a value-dependent check; otherwise ``None``
    (the helpers look at the mask's values).
    """
    return True if padding_mask is not None and padding_mask.dim() == 2 and exporting() else None


def build_attention_mask(
    padding_mask: Optional[torch.Tensor], query_len: int, past_len: int, causal: bool, padded: Optional[bool] = None
) -> Tuple[Optional[torch.Tensor], bool]:
    """Turn a 2D padding mask into what SDPA takes.

    Args:
        padding_mask: ``(batch, past_len + query_len)`` with 1 for tokens to attend to, or ``None``.
        query_len: number of new positions.
        past_len: number of positions already in the KV cache.
        causal: whether queries may only see earlier keys.
        padded: ``has_padding(padding_mask)`` if the caller already knows it.

    Returns:
        ``(mask, is_causal)``: a boolean ``(batch, 1, query_len, key_len)`` mask (True = attend) or ``None``,
        and whether SDPA should apply its own causal mask instead.
    """
    key_len = past_len + query_len
    if padding_mask is not None and padding_mask.dim() == 4:  # already expanded by the caller
        return padding_mask.bool() if padding_mask.dtype != torch.bool else padding_mask, False
    no_padding = not (has_padding(padding_mask) if padded is None else padded)
    if no_padding:
        if not causal or query_len == 1:
            return None, False
        if past_len == 0:
            return None, True
    device = padding_mask.device if padding_mask is not None else None
    mask = None
    if causal:
        q_pos = torch.arange(past_len, key_len, device=device)[:, None]
        k_pos = torch.arange(key_len, device=device)[None, :]
        mask = (k_pos <= q_pos)[None, None]  # (1, 1, Tq, Tk)
    if not no_padding:
        keys = padding_mask[:, None, None, :].bool()  # (B, 1, 1, Tk)
        mask = keys if mask is None else mask & keys
        if causal:
            # A query at a padded position would see no key at all and SDPA would return NaN, which then
            # leaks into other rows through the values; let every query see itself (its output is unused).
            diag = torch.arange(past_len, key_len, device=device)[:, None] == torch.arange(key_len, device=device)[None, :]
            mask = mask | diag[None, None]
    return mask, False


def position_ids_from(
    padding_mask: Optional[torch.Tensor], batch: int, query_len: int, past_len: int, device, padded: Optional[bool] = None
) -> torch.Tensor:
    """Absolute positions of the new tokens; with a padding mask, padding does not advance the position.

    Args:
        padding_mask: ``(batch, past_len + query_len)`` 0/1 mask or ``None``.
        batch: batch size.
        query_len: number of new positions.
        past_len: number of cached positions.
        device: device of the result.
        padded: ``has_padding(padding_mask)`` if the caller already knows it.

    Returns:
        ``(batch, query_len)`` long tensor.
    """
    if has_padding(padding_mask) if padded is None else padded:
        positions = (padding_mask.long().cumsum(-1) - 1).clamp(min=0)
        return positions[:, -query_len:]
    return torch.arange(past_len, past_len + query_len, device=device).unsqueeze(0).expand(batch, -1)


# --------------------------------------------------------------------------- attention


class LNormAttention(nn.Module):
    """Multi-head attention through ``F.scaled_dot_product_attention``.

    Self-attention projects queries, keys and values with one ``qkv_proj``;
    cross-attention projects queries from the decoder (``q_proj``) and keys and
    values from the encoder output (``kv_proj``). ``out_proj`` maps back. These
    are the names to give PEFT/LoRA as ``target_modules``.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, layer_idx: int, is_cross_attention: bool = False, bias: bool = True):
        super().__init__()
        check_heads(hidden_size, num_heads)
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.layer_idx = layer_idx
        self.is_cross_attention = is_cross_attention
        if is_cross_attention:
            self.q_proj = nn.Linear(hidden_size, hidden_size, bias=bias)
            self.kv_proj = nn.Linear(hidden_size, 2 * hidden_size, bias=bias)
        else:
            self.qkv_proj = nn.Linear(hidden_size, 3 * hidden_size, bias=bias)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.out_proj.is_residual_projection = True

    def _split(self, x: torch.Tensor, parts: int):
        batch, length, _ = x.shape
        x = x.view(batch, length, parts, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (parts, B, nh, T, hd)
        return x.unbind(0)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        is_causal: bool = False,
        cache: Optional[Cache] = None,
        key_value_states: Optional[torch.Tensor] = None,
        output_attentions: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Attend.

        Args:
            hidden_states: ``(B, T, hidden)`` queries (and keys/values for self-attention).
            attention_mask: boolean ``(B or 1, 1, T, S)``, True = attend; or ``None``.
            is_causal: let SDPA apply the causal mask (only when ``attention_mask`` is ``None``).
            cache: self-attention: the ``Cache`` to append to; cross-attention: the ``EncoderDecoderCache``.
            key_value_states: encoder output ``(B, S, hidden)`` for cross-attention.
            output_attentions: also return the attention weights (slower, eager path).

        Returns:
            ``(output (B, T, hidden), weights (B, nh, T, S) or None)``.
        """
        batch, length, hidden = hidden_states.shape
        if self.is_cross_attention:
            (query,) = self._split(self.q_proj(hidden_states), 1)
            if isinstance(cache, EncoderDecoderCache) and cache.is_updated.get(self.layer_idx):
                layer = cache.cross_attention_cache.layers[self.layer_idx]
                key, value = layer.keys, layer.values
            else:
                key, value = self._split(self.kv_proj(key_value_states), 2)
                if isinstance(cache, EncoderDecoderCache):
                    key, value = cache.cross_attention_cache.update(key, value, self.layer_idx)
                    cache.is_updated[self.layer_idx] = True
        else:
            query, key, value = self._split(self.qkv_proj(hidden_states), 3)
            if cache is not None:
                key, value = cache.update(key, value, self.layer_idx)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if output_attentions:
            scores = query @ key.transpose(-1, -2) / self.head_dim**0.5  # (B, nh, T, S)
            if is_causal:
                attention_mask = torch.ones(length, key.shape[-2], dtype=torch.bool, device=query.device).tril()
            if attention_mask is not None:
                scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            weights = F.dropout(scores.softmax(-1), dropout, self.training)
            out = weights @ value
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout, is_causal=is_causal)
        out = out.transpose(1, 2).reshape(batch, length, hidden)  # (B, T, nh * hd)
        return self.out_proj(out), weights


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
    ):
        super().__init__()
        check_choice("norm_position", norm_position, NORM_POSITIONS)
        self.pre_norm = norm_position == "pre"
        self.causal = causal
        self.attn_norm = build_norm(norm_type, hidden_size, eps)
        self.attn = LNormAttention(hidden_size, num_heads, attention_dropout, layer_idx)
        self.cross_attn = None
        if cross_attention:
            self.cross_attn_norm = build_norm(norm_type, hidden_size, eps)
            self.cross_attn = LNormAttention(hidden_size, num_heads, attention_dropout, layer_idx, is_cross_attention=True)
        self.mlp_norm = build_norm(norm_type, hidden_size, eps)
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
            attention_mask, is_causal: self-attention mask (see ``build_attention_mask``).
            cache: a ``Cache`` (decoder-only) or an ``EncoderDecoderCache`` (seq2seq decoder), or ``None``.
            encoder_hidden_states: ``(B, S, hidden)`` for cross-attention.
            encoder_attention_mask: boolean ``(B, 1, 1, S)`` mask over the encoder output.
            output_attentions: also return attention weights.

        Returns:
            ``(hidden_states, self_attention_weights, cross_attention_weights)``.
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

    Returns:
        ``(layers, final_norm)``: an ``nn.ModuleList`` of ``LNormBlock`` and the
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
            )
            for i in range(num_layers)
        ]
    )
    pre = config.norm_position == "pre"
    final_norm = build_norm(config.norm_type, config.hidden_size, config.layer_norm_eps) if pre else Passthrough()
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
        layers, final_norm: what ``build_stack`` returned.
        hidden: ``(B, T, hidden)`` input of the first block.
        output_attentions: collect each block's attention weights.
        output_hidden_states: collect the input of every block and the final (normed) output.
        attention_mask, is_causal, cache, encoder_hidden_states, encoder_attention_mask: passed to every
            ``LNormBlock`` (see its ``forward``).

    Returns:
        ``(hidden, all_hidden, all_attn, all_cross)``: the output and, when asked for, tuples of hidden states,
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


def new_cache(encoder_decoder: bool = False) -> Cache:
    """An empty ``DynamicCache`` (or ``EncoderDecoderCache`` of two) for a forward called with ``use_cache=True``."""
    if encoder_decoder:
        return EncoderDecoderCache(DynamicCache(), DynamicCache())
    return DynamicCache()


def prepare_cache(
    stack: nn.Module, past_key_values: Optional[Cache], cache: Optional[Cache], use_cache: Optional[bool], encoder_decoder: bool = False
) -> Tuple[Optional[Cache], int]:
    """The KV cache a causal stack's forward appends to, and how many positions it already holds.

    Args:
        stack: the module running the blocks (reads ``config.use_cache``, ``training``, ``gradient_checkpointing``).
        past_key_values, cache: the cache under either name (see ``pick_cache``).
        use_cache: whether to keep a cache; ``None`` means ``config.use_cache`` outside training. Never while
            training with gradient checkpointing.
        encoder_decoder: the stack is a seq2seq decoder: the cache is an ``EncoderDecoderCache`` (a plain
            ``Cache`` is wrapped with an empty cross-attention cache).

    Returns:
        ``(cache or None, past_len)``: a new empty cache when one is wanted and none was given.
    """
    use_cache = use_cache if use_cache is not None else (stack.config.use_cache and not stack.training)
    cache = pick_cache(past_key_values, cache)
    if stack.gradient_checkpointing and stack.training:
        use_cache = False  # recomputation would append to the cache twice
    if not use_cache:
        return None, 0
    if cache is None:
        cache = new_cache(encoder_decoder)
    elif encoder_decoder and not isinstance(cache, EncoderDecoderCache):
        cache = EncoderDecoderCache(cache, new_cache())
    own = cache.self_attention_cache if encoder_decoder else cache
    return cache, own.get_seq_length()


# --------------------------------------------------------------------------- shared model helpers


def output_flags(config, output_attentions: Optional[bool], output_hidden_states: Optional[bool], return_dict: Optional[bool]):
    """``(output_attentions, output_hidden_states, return_dict)`` of a forward, each ``None`` replaced by ``config``'s value."""
    output_attentions = bool(output_attentions if output_attentions is not None else config.output_attentions)
    output_hidden_states = bool(output_hidden_states if output_hidden_states is not None else config.output_hidden_states)
    return_dict = return_dict if return_dict is not None else config.return_dict
    return output_attentions, output_hidden_states, return_dict


def init_weights(module: nn.Module, std: float, num_layers: int) -> None:
    """GPT-2 initialization: normal(0, std) weights, zero biases, norms at weight 1 / bias 0.

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
    elif isinstance(module, (nn.LayerNorm, nn.RMSNorm, LNormRMSNorm)):
        if module.weight is not None:
            _init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            _init.zeros_(module.bias)


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
        num_items_in_batch: when given (Trainer with gradient accumulation), the sum is divided by it.

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
