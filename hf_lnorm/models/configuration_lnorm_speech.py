"""Configuration of LNormSpeech, a speech-to-text transformer: log-mel features -> conv subsampling -> encoder-decoder.

Shipped next to saved weights as remote code: imports only transformers and siblings.
"""

from __future__ import annotations

from typing import Optional

from transformers import PretrainedConfig

from .configuration_lnorm_seq2seq import EncoderDecoderConfigMixin
# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import set_stack_fields


class LNormSpeechConfig(EncoderDecoderConfigMixin, PretrainedConfig):
    """Configuration of ``LNormSpeechModel`` and ``LNormSpeechForConditionalGeneration``.

    The encoder reads ``input_features`` of shape ``(batch, frames, num_mel_bins)`` (log-mel frames, time
    first, as ``LNormSpeechFeatureExtractor`` returns them), subsamples time by 4 with two stride-2
    ``Conv1d`` layers, adds learned positions and runs ``num_hidden_layers`` transformer blocks. The decoder
    (``num_decoder_layers`` blocks with cross-attention) predicts text tokens. ``model_type`` is
    ``"lnorm-speech"``.

    Args:
        vocab_size: text vocabulary size (decoder input and output).
        num_mel_bins: features per frame (the feature extractor's ``feature_size``).
        conv_channels: channels of the first subsampling convolution.
        conv_kernel_size: kernel size of both subsampling convolutions (odd; padding keeps ``ceil(T / 2)``).
        max_source_positions: longest encoder sequence *after* subsampling (4 input frames each).
        max_position_embeddings: longest decoder (text) sequence.
        hidden_size: width of the residual stream.
        num_hidden_layers: encoder layers.
        num_decoder_layers: decoder layers; defaults to ``num_hidden_layers``.
        num_attention_heads: heads per attention layer; must divide ``hidden_size``.
        mlp_ratio: MLP width as a multiple of ``hidden_size``.
        intermediate_size: MLP width; overrides ``mlp_ratio`` when given.
        hidden_act: activation of the MLPs and of the subsampling convolutions.
        dropout: dropout on embeddings and residual branches.
        attention_dropout: dropout on attention weights.
        norm_type: ``layernorm`` | ``rmsnorm`` | ``dyt`` (Dynamic Tanh) | ``none``.
        norm_position: ``pre`` (default) | ``post``.
        layer_norm_eps: eps of the norms.
        dyt_alpha_init: starting value of the learnable ``alpha`` of ``norm_type="dyt"`` (Dynamic Tanh,
            ``weight * tanh(alpha * x) + bias``); a positive finite float.
        tie_word_embeddings: the output projection reuses the decoder's token embedding.
        ctc_weight: weight of an auxiliary CTC loss on the encoder output (joint CTC/attention training, which
            helps the encoder learn the alignment); 0 (default) builds no CTC head. The loss is
            ``(1 - ctc_weight) * cross_entropy + ctc_weight * ctc``; generation uses the decoder only.
        initializer_range: std of the normal init.
        use_cache: return a KV cache by default (``generate()``).
        pad_token_id: id of the padding token (also the CTC blank).
        bos_token_id: id of the start token.
        eos_token_id: id of the end token.
        decoder_start_token_id: the first decoder input; defaults to ``bos_token_id``.
        is_encoder_decoder: keep True (transformers reads it).
        **kwargs (Any): other ``PretrainedConfig`` arguments.

    Raises:
        ValueError: an even or non-positive ``conv_kernel_size``, ``ctc_weight`` outside [0, 1), a
            non-positive size, ``hidden_size`` not divisible by ``num_attention_heads``, or an unknown
            ``norm_type`` / ``norm_position``, or a ``dyt_alpha_init`` that is not a positive finite float.

    Examples:
        >>> from hf_lnorm.models import LNormSpeechConfig
        >>> config = LNormSpeechConfig(vocab_size=32, num_mel_bins=40, hidden_size=64, num_hidden_layers=2,
        ...                            num_decoder_layers=1, num_attention_heads=4, ctc_weight=0.3)
        >>> config.model_type, config.decoder_vocab_size, config.get_text_config(decoder=True).num_hidden_layers
        ('lnorm-speech', 32, 1)
    """

    model_type = "lnorm-speech"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]
    SUBSAMPLING = 4

    def __init__(
        self,
        vocab_size: int = 32,
        num_mel_bins: int = 80,
        conv_channels: int = 256,
        conv_kernel_size: int = 3,
        max_source_positions: int = 256,
        max_position_embeddings: int = 64,
        hidden_size: int = 192,
        num_hidden_layers: int = 4,
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
        tie_word_embeddings: bool = True,
        ctc_weight: float = 0.0,
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
        if conv_kernel_size < 1 or conv_kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size={conv_kernel_size} is not supported; use an odd size >= 1 (e.g. 3 or 5)")
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight={ctc_weight} must be in [0, 1): the weight of the auxiliary CTC loss")
        for name, value in (("num_mel_bins", num_mel_bins), ("conv_channels", conv_channels), ("vocab_size", vocab_size)):
            if value < 1:
                raise ValueError(f"{name}={value} must be a positive integer")
        self.vocab_size = vocab_size
        self.num_mel_bins = num_mel_bins
        self.conv_channels = conv_channels
        self.conv_kernel_size = conv_kernel_size
        self.max_source_positions = max_source_positions
        self.max_position_embeddings = max_position_embeddings
        self.ctc_weight = ctc_weight
        super().__init__(num_hidden_layers, num_decoder_layers, use_cache, tie_word_embeddings, pad_token_id, bos_token_id,
                         eos_token_id, decoder_start_token_id, is_encoder_decoder, **kwargs)

    @property
    def decoder_vocab_size(self) -> int:
        """The decoder's vocabulary (there is one vocabulary; the shared decoder stack reads this name)."""
        return self.vocab_size

    def get_text_config(self, decoder=None, encoder=None):
        """As ``PretrainedConfig.get_text_config``; the decoder side reports ``num_decoder_layers`` as its depth.

        generate() sizes its KV cache from ``get_text_config(decoder=True).num_hidden_layers``.

        Args:
            decoder (bool | None): ask for the decoder side.
            encoder (bool | None): ask for the encoder side.

        Returns:
            (PretrainedConfig): this config, or a copy whose ``num_hidden_layers`` is the decoder's depth.
        """
        config = super().get_text_config(decoder=decoder, encoder=encoder)
        num_decoder_layers = getattr(self, "num_decoder_layers", config.num_hidden_layers)
        if decoder and not encoder and config.num_hidden_layers != num_decoder_layers:
            import copy

            config = copy.deepcopy(config) if config is self else config
            config.num_hidden_layers = num_decoder_layers
        return config
