"""Attention of the hf_lnorm model families: masks, positions, multi-head attention and the KV cache.

``LNormAttention`` runs self- and cross-attention through SDPA; the mask and
position helpers turn a 2D padding mask into what SDPA takes; ``pick_cache``,
``new_cache`` and ``prepare_cache`` handle the transformers ``Cache`` a causal
stack appends to.

This file is shipped next to saved weights as remote code, so it imports only
torch and transformers.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, EncoderDecoderCache


def check_heads(hidden_size: int, num_attention_heads: int) -> None:
    """Raise ``ValueError`` unless ``hidden_size`` splits evenly into ``num_attention_heads`` heads."""
    if num_attention_heads <= 0 or hidden_size % num_attention_heads != 0:
        raise ValueError(
            f"hidden_size={hidden_size} is not divisible by num_attention_heads={num_attention_heads}; "
            f"choose a hidden_size that is a multiple of the number of heads"
        )


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
        device (torch.device | str): device of the result.
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


# --------------------------------------------------------------------------- cache


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
        past_key_values: the cache under its transformers 4.x name (see ``pick_cache``).
        cache: the cache under its transformers 5.x name.
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
