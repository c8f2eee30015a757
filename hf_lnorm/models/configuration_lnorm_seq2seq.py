"""Configuration of LNormSeq2Seq: an encoder-decoder transformer for translation.

Shipped next to saved weights as remote code: imports only transformers and siblings.
"""

from __future__ import annotations

import copy
from typing import Optional

from transformers import PretrainedConfig

# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import set_stack_fields


class EncoderDecoderConfigMixin:
    """The decoder-side fields of an encoder-decoder config (shared with ``LNormSpeechConfig``).

    Its ``__init__`` ends the config's ``__init__``: it sets ``num_decoder_layers`` (default: ``num_hidden_layers``),
    ``use_cache``, ``tie_word_embeddings`` and ``decoder_start_token_id`` (default: ``bos_token_id``), then runs
    ``PretrainedConfig.__init__`` with the special token ids.
    """

    def __init__(self, num_hidden_layers, num_decoder_layers, use_cache, tie_word_embeddings, pad_token_id, bos_token_id,
                 eos_token_id, decoder_start_token_id, is_encoder_decoder, **kwargs):
        self.num_decoder_layers = num_decoder_layers if num_decoder_layers is not None else num_hidden_layers
        self.use_cache = use_cache
        self.tie_word_embeddings = tie_word_embeddings
        self.decoder_start_token_id = decoder_start_token_id if decoder_start_token_id is not None else bos_token_id
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=self.decoder_start_token_id,
            is_encoder_decoder=is_encoder_decoder,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


class LNormSeq2SeqConfig(EncoderDecoderConfigMixin, PretrainedConfig):
    """Configuration of ``LNormSeq2SeqModel`` and ``LNormSeq2SeqForConditionalGeneration``.

    An encoder-decoder transformer (learned absolute positions, GELU MLPs,
    cross-attention) whose norms are set by ``norm_type`` and
    ``norm_position``, as in the other families. ``model_type`` is
    ``"lnorm-seq2seq"``.

    Args:
        vocab_size: source vocabulary size (the joint vocabulary when ``share_embeddings``).
        decoder_vocab_size: target vocabulary size; defaults to ``vocab_size`` and must equal it when
            ``share_embeddings``.
        max_position_embeddings: longest source or target sequence (learned absolute positions).
        hidden_size: width of the residual stream.
        num_hidden_layers: encoder layers.
        num_decoder_layers: decoder layers; defaults to ``num_hidden_layers``.
        num_attention_heads: heads per attention layer; must divide ``hidden_size``.
        mlp_ratio: MLP width as a multiple of ``hidden_size``.
        intermediate_size: MLP width; overrides ``mlp_ratio`` when given.
        hidden_act: MLP activation (a key of ``transformers.activations.ACT2FN``).
        dropout: dropout on embeddings and residual branches.
        attention_dropout: dropout on attention weights.
        norm_type: ``layernorm`` | ``rmsnorm`` | ``dyt`` (Dynamic Tanh) | ``none``.
        norm_position: ``pre`` (default: stable without warm-up) | ``post`` (the original Transformer).
        layer_norm_eps: eps of the norms.
        dyt_alpha_init: starting value of the learnable ``alpha`` of ``norm_type="dyt"`` (Dynamic Tanh,
            ``weight * tanh(alpha * x) + bias``); a positive finite float.
        share_embeddings: one token embedding for encoder and decoder (a joint source/target vocabulary).
        tie_word_embeddings: the output projection reuses the decoder's token embedding.
        initializer_range: std of the normal init.
        use_cache: return a KV cache by default (``generate()``).
        pad_token_id: id of the padding token (also what ``-100`` labels become in decoder inputs).
        bos_token_id: id of the start token.
        eos_token_id: id of the end token.
        decoder_start_token_id: the first decoder input; defaults to ``bos_token_id``.
        is_encoder_decoder: keep True (transformers reads it).
        **kwargs (Any): other ``PretrainedConfig`` arguments.

    Raises:
        ValueError: ``share_embeddings`` with two different vocabulary sizes, ``hidden_size``
            not divisible by ``num_attention_heads``, an unknown ``norm_type`` / ``norm_position``, or a
            ``dyt_alpha_init`` that is not a positive finite float.

    Examples:
        >>> from hf_lnorm.models import LNormSeq2SeqConfig
        >>> config = LNormSeq2SeqConfig(vocab_size=120, decoder_vocab_size=80, share_embeddings=False,
        ...                             hidden_size=32, num_hidden_layers=2, num_decoder_layers=1, num_attention_heads=4)
        >>> config.decoder_start_token_id == config.bos_token_id, config.get_text_config(decoder=True).vocab_size
        (True, 80)
    """

    model_type = "lnorm-seq2seq"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size: int = 8000,
        decoder_vocab_size: Optional[int] = None,
        max_position_embeddings: int = 256,
        hidden_size: int = 256,
        num_hidden_layers: int = 3,
        num_decoder_layers: Optional[int] = None,
        num_attention_heads: int = 4,
        mlp_ratio: float = 4.0,
        intermediate_size: Optional[int] = None,
        hidden_act: str = "gelu",
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        norm_type: str = "layernorm",
        norm_position: str = "pre",
        layer_norm_eps: float = 1e-5,
        share_embeddings: bool = True,
        tie_word_embeddings: bool = True,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        pad_token_id: int = 0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        decoder_start_token_id: Optional[int] = None,
        is_encoder_decoder: bool = True,
        dyt_alpha_init: float = 0.5,
        **kwargs,
    ):
        set_stack_fields(self, hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio, intermediate_size, hidden_act,
                         dropout, attention_dropout, norm_type, norm_position, layer_norm_eps, initializer_range,
                         dyt_alpha_init)
        decoder_vocab_size = decoder_vocab_size if decoder_vocab_size is not None else vocab_size
        if share_embeddings and decoder_vocab_size != vocab_size:
            raise ValueError(
                f"share_embeddings=True needs one vocabulary, got vocab_size={vocab_size} and "
                f"decoder_vocab_size={decoder_vocab_size}; set share_embeddings=False for separate vocabularies"
            )
        self.vocab_size = vocab_size
        self.decoder_vocab_size = decoder_vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.share_embeddings = share_embeddings
        super().__init__(num_hidden_layers, num_decoder_layers, use_cache, tie_word_embeddings, pad_token_id, bos_token_id,
                         eos_token_id, decoder_start_token_id, is_encoder_decoder, **kwargs)

    def get_text_config(self, decoder=None, encoder=None):
        """As ``PretrainedConfig.get_text_config``, but the output side reports the decoder's sizes.

        generate() sizes its KV cache from ``get_text_config(decoder=True).num_hidden_layers`` and its beam
        search from ``get_text_config().vocab_size``; with separate vocabularies or a deeper decoder those
        must be the decoder's values.

        Args:
            decoder (bool | None): ask for the decoder side.
            encoder (bool | None): ask for the encoder side (its own sizes are returned unchanged).

        Returns:
            (PretrainedConfig): this config, or a copy with ``vocab_size`` / ``num_hidden_layers`` set to the decoder's.
        """
        config = super().get_text_config(decoder=decoder, encoder=encoder)
        if encoder and not decoder:
            return config
        # A derived view may already lack the decoder_* names (transformers renames them); keep it then.
        decoder_vocab_size = getattr(self, "decoder_vocab_size", config.vocab_size)
        num_decoder_layers = getattr(self, "num_decoder_layers", config.num_hidden_layers)
        updates = {}
        if config.vocab_size != decoder_vocab_size:
            updates["vocab_size"] = decoder_vocab_size
        if decoder and config.num_hidden_layers != num_decoder_layers:
            updates["num_hidden_layers"] = num_decoder_layers
        if updates:
            config = copy.deepcopy(config) if config is self else config
            for key, value in updates.items():
                setattr(config, key, value)
        return config
