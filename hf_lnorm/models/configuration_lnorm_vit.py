"""Configuration of LNormViT: a Vision Transformer with switchable normalization.

Shipped next to saved weights as remote code: imports only transformers and siblings.
"""

from __future__ import annotations

from typing import Optional

from transformers import PretrainedConfig

# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import check_choice, set_stack_fields

POOLING_MODES = ("cls", "mean")


class LNormViTConfig(PretrainedConfig):
    """Configuration of ``LNormViTModel`` and ``LNormViTForImageClassification``.

    The image is cut into ``(image_size / patch_size) ** 2`` square patches by a strided
    convolution; a learned class token is prepended and learned position embeddings added; the
    sequence runs through transformer blocks (``norm_position="pre"``: Pre-LN, as in ViT) and a
    final norm. The defaults are ViT-Tiny/16 at 224 pixels. ``model_type`` is ``"lnorm-vit"``.

    Args:
        image_size: side of the (square) input images, in pixels.
        patch_size: side of the square patches; must divide ``image_size``.
        num_channels: channels of the input images (3 for RGB, 1 for grayscale).
        hidden_size: width of the residual stream.
        num_hidden_layers: number of transformer blocks.
        num_attention_heads: heads per attention layer; must divide ``hidden_size``.
        mlp_ratio: MLP width as a multiple of ``hidden_size``.
        intermediate_size: MLP width; overrides ``mlp_ratio`` when given.
        hidden_act: MLP activation (a key of ``transformers.activations.ACT2FN``).
        dropout: dropout on the embeddings and the residual branches.
        attention_dropout: dropout on the attention weights.
        norm_type: ``layernorm`` | ``rmsnorm`` | ``dyt`` (Dynamic Tanh, no normalization statistics) | ``none`` (ablation).
        norm_position: ``pre`` (ViT) | ``post`` (original Transformer).
        layer_norm_eps: eps of the norms.
        dyt_alpha_init: starting value of the learnable ``alpha`` of ``norm_type="dyt"`` (Dynamic Tanh,
            ``weight * tanh(alpha * x) + bias``); a positive finite float.
        initializer_range: std of the (truncated) normal init of weights, class token and positions.
        pooling: what ``pooler_output`` is: ``cls`` (the class token) or ``mean`` (mean of the patch tokens).
        **kwargs (Any): other ``PretrainedConfig`` arguments (``num_labels``, ``id2label``, ``label2id``,
            ``problem_type``, ...).

    Raises:
        ValueError: ``patch_size`` does not divide ``image_size``, a size that is not a positive int,
            ``hidden_size`` not divisible by ``num_attention_heads``, or an unknown ``norm_type``,
            ``norm_position`` or ``pooling``, or a ``dyt_alpha_init`` that is not a positive finite float.

    Examples:
        >>> from hf_lnorm.models import LNormViTConfig
        >>> config = LNormViTConfig(image_size=32, patch_size=4, num_channels=1, hidden_size=64,
        ...                         num_hidden_layers=2, num_attention_heads=4, pooling="mean")
        >>> config.num_patches
        64
        >>> LNormViTConfig(image_size=30, patch_size=4)
        Traceback (most recent call last):
        ...
        ValueError: image_size=30 is not divisible by patch_size=4; choose a patch_size that divides the image side
    """

    model_type = "lnorm-vit"

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int = 3,
        hidden_size: int = 192,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 3,
        mlp_ratio: float = 4.0,
        intermediate_size: Optional[int] = None,
        hidden_act: str = "gelu",
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        norm_type: str = "layernorm",
        norm_position: str = "pre",
        layer_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        pooling: str = "cls",
        dyt_alpha_init: float = 0.5,
        **kwargs,
    ):
        set_stack_fields(self, hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio, intermediate_size, hidden_act,
                         dropout, attention_dropout, norm_type, norm_position, layer_norm_eps, initializer_range,
                         dyt_alpha_init)
        check_choice("pooling", pooling, POOLING_MODES)
        for name, value in (("image_size", image_size), ("patch_size", patch_size), ("num_channels", num_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} is not divisible by patch_size={patch_size}; "
                f"choose a patch_size that divides the image side"
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.pooling = pooling
        super().__init__(**kwargs)

    @property
    def num_patches(self) -> int:
        """Patches per image (tokens without the class token)."""
        return (self.image_size // self.patch_size) ** 2
