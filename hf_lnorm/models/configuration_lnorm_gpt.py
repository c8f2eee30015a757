"""Configuration of LNormGPT: a decoder-only transformer with switchable normalization.

Shipped next to saved weights as remote code: imports only transformers and siblings.
"""

from __future__ import annotations

from typing import Optional

from transformers import PretrainedConfig

# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import set_stack_fields


class LNormGPTConfig(PretrainedConfig):
    """Configuration of ``LNormGPTModel`` and its heads.

    A GPT-2-shaped decoder (learned absolute positions, GELU MLP, causal
    self-attention with a KV cache) whose norms are one flag away:
    ``norm_type`` picks LayerNorm, RMSNorm, Dynamic Tanh or none, ``norm_position`` puts them
    before (pre-LN) or after (post-LN) each residual branch. With ``image_size``
    set it is an ImageGPT model over color-cluster tokens (see
    ``ImageGPTColorProcessor``). ``model_type`` is ``"lnorm-gpt"``.

    Args:
        vocab_size: number of token ids (for ImageGPT mode: number of color clusters, plus one start token).
        max_position_embeddings: context length (learned absolute positions).
        hidden_size: width of the residual stream.
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: heads per attention layer; must divide ``hidden_size``.
        mlp_ratio: MLP width as a multiple of ``hidden_size`` (4 as in GPT-2).
        intermediate_size: MLP width; overrides ``mlp_ratio`` when given.
        hidden_act: MLP activation (a key of ``transformers.activations.ACT2FN``).
        dropout: dropout on embeddings and residual branches.
        attention_dropout: dropout on attention weights.
        norm_type: ``layernorm`` | ``rmsnorm`` | ``dyt`` (Dynamic Tanh, no normalization statistics) | ``none`` (ablation).
        norm_position: ``pre`` (GPT-2, stable deep training) | ``post`` (original Transformer).
        layer_norm_eps: eps of the norms.
        dyt_alpha_init: starting value of the learnable ``alpha`` of ``norm_type="dyt"`` (Dynamic Tanh,
            ``weight * tanh(alpha * x) + bias``); a positive finite float.
        initializer_range: std of the normal init of linear and embedding weights.
        tie_word_embeddings: share the token embedding with the LM head.
        use_cache: return a KV cache by default.
        image_size: ImageGPT mode: side of the square images (tokens = ``image_size**2``), else ``None``.
        bos_token_id: id of the start token (ImageGPT mode: the start-of-image token), or None.
        eos_token_id: id of the end token, or None.
        pad_token_id: id of the padding token (sequence classification finds the
            last real token with it), or None.
        **kwargs (Any): other ``PretrainedConfig`` arguments (``num_labels``, ``id2label``, ...).

    Raises:
        ValueError: ``hidden_size`` not divisible by ``num_attention_heads``, an unknown
            ``norm_type`` or ``norm_position``, ``max_position_embeddings`` below 1, or a
            ``dyt_alpha_init`` that is not a positive finite float.

    Examples:
        >>> from hf_lnorm.models import LNormGPTConfig, LNormGPTForCausalLM
        >>> config = LNormGPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                         norm_type="rmsnorm", norm_position="post")
        >>> config.model_type, config.intermediate_size
        ('lnorm-gpt', 128)
        >>> model = LNormGPTForCausalLM(config)
        >>> type(model.transformer.layers[0].attn_norm).__name__
        'LNormRMSNorm'
        >>> LNormGPTConfig(hidden_size=30, num_attention_heads=4)
        Traceback (most recent call last):
        ...
        ValueError: hidden_size=30 is not divisible by num_attention_heads=4; ...
    """

    model_type = "lnorm-gpt"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size: int = 8192,
        max_position_embeddings: int = 256,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        mlp_ratio: float = 4.0,
        intermediate_size: Optional[int] = None,
        hidden_act: str = "gelu",
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        norm_type: str = "layernorm",
        norm_position: str = "pre",
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        use_cache: bool = True,
        image_size: Optional[int] = None,
        bos_token_id: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        pad_token_id: Optional[int] = None,
        dyt_alpha_init: float = 0.5,
        **kwargs,
    ):
        set_stack_fields(self, hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio, intermediate_size, hidden_act,
                         dropout, attention_dropout, norm_type, norm_position, layer_norm_eps, initializer_range,
                         dyt_alpha_init)
        if max_position_embeddings < 1:
            raise ValueError(f"max_position_embeddings={max_position_embeddings} must be at least 1")
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.use_cache = use_cache
        self.image_size = image_size
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
