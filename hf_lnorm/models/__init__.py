"""LayerNorm-centred model families, registered with the transformers Auto classes on import.

Families (one flat folder, so each family's files can be shipped as remote code):

* ``lnorm-gpt``: ``LNormGPTConfig``, ``LNormGPTModel``, ``LNormGPTForCausalLM``,
  ``LNormGPTForSequenceClassification`` (and the ImageGPT mode with ``ImageGPTColorProcessor``).
* ``lnorm-seq2seq``: ``LNormSeq2SeqConfig``, ``LNormSeq2SeqModel``, ``LNormSeq2SeqForConditionalGeneration``.
* ``lnorm-policy``: ``LNormPolicyConfig``, ``LNormPolicyModel`` (actor-critic; ``AutoModel``: transformers has no RL Auto class).
* ``lnorm-vit``: ``LNormViTConfig``, ``LNormViTModel`` (image encoder), ``LNormViTForImageClassification``,
  ``LNormViTImageProcessor`` (``AutoImageProcessor``).
* ``lnorm-speech``: ``LNormSpeechConfig``, ``LNormSpeechModel``, ``LNormSpeechForConditionalGeneration``
  (``AutoModelForSpeechSeq2Seq``), ``LNormSpeechFeatureExtractor`` (``AutoFeatureExtractor``),
  ``LNormSpeechProcessor`` (``AutoProcessor``).
* ``lnorm-vision-text``: ``LNormVisionTextConfig``, ``LNormVisionTextModel``, ``LNormVisionTextForClassification``
  (``AutoModelForVisualQuestionAnswering``), ``LNormVisionTextProcessor`` (``AutoProcessor``; image processor
  ``LNormViTImageProcessor`` + a word-level tokenizer from ``train_question_tokenizer``).

Examples:
    >>> import hf_lnorm  # registers the families
    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> config = AutoConfig.for_model("lnorm-gpt", vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    >>> type(AutoModelForCausalLM.from_config(config)).__name__
    'LNormGPTForCausalLM'
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)
from transformers import AutoFeatureExtractor, AutoModelForSpeechSeq2Seq, AutoProcessor
from transformers import AutoModelForVisualQuestionAnswering

from .configuration_lnorm_gpt import LNormGPTConfig
from .configuration_lnorm_seq2seq import LNormSeq2SeqConfig
from .configuration_lnorm_policy import LNormPolicyConfig
from .configuration_lnorm_vit import LNormViTConfig
from .layers import NORM_POSITIONS, NORM_TYPES, LNormDyT, LNormLayerNorm, LNormRMSNorm
from .modeling_lnorm_gpt import (
    LNormGPTForCausalLM,
    LNormGPTForSequenceClassification,
    LNormGPTModel,
    LNormGPTPreTrainedModel,
)
from .processing_lnorm_imagegpt import ImageGPTColorProcessor, complete_images
from .modeling_lnorm_policy import LNormPolicyModel, LNormPolicyOutput, LNormPolicyPreTrainedModel, PolicyStep
from .modeling_lnorm_vit import LNormViTForImageClassification, LNormViTModel, LNormViTPreTrainedModel
from .processing_lnorm_vit import LNormViTImageProcessor
from .configuration_lnorm_speech import LNormSpeechConfig
from .modeling_lnorm_speech import LNormSpeechForConditionalGeneration, LNormSpeechModel, LNormSpeechPreTrainedModel
from .processing_lnorm_speech import LNormSpeechFeatureExtractor, LNormSpeechProcessor, build_word_tokenizer
from .configuration_lnorm_vision_text import LNormVisionTextConfig, LNormVisionTextTextConfig
from .modeling_lnorm_vision_text import LNormVisionTextForClassification, LNormVisionTextModel, LNormVisionTextPreTrainedModel
from .processing_lnorm_vision_text import LNormVisionTextProcessor, train_question_tokenizer
from .modeling_lnorm_seq2seq import (
    LNormSeq2SeqForConditionalGeneration,
    LNormSeq2SeqModel,
    LNormSeq2SeqPreTrainedModel,
)

_REGISTRATIONS = [
    (LNormGPTConfig, AutoModel, LNormGPTModel),
    (LNormGPTConfig, AutoModelForCausalLM, LNormGPTForCausalLM),
    (LNormGPTConfig, AutoModelForSequenceClassification, LNormGPTForSequenceClassification),
    (LNormSeq2SeqConfig, AutoModel, LNormSeq2SeqModel),
    (LNormSeq2SeqConfig, AutoModelForSeq2SeqLM, LNormSeq2SeqForConditionalGeneration),
    (LNormPolicyConfig, AutoModel, LNormPolicyModel),
    (LNormViTConfig, AutoModel, LNormViTModel),
    (LNormViTConfig, AutoModelForImageClassification, LNormViTForImageClassification),
    (LNormSpeechConfig, AutoModel, LNormSpeechModel),
    (LNormSpeechConfig, AutoModelForSpeechSeq2Seq, LNormSpeechForConditionalGeneration),
    (LNormVisionTextConfig, AutoModel, LNormVisionTextModel),
    (LNormVisionTextConfig, AutoModelForVisualQuestionAnswering, LNormVisionTextForClassification),
]

# (Auto class, config class, keyword arguments of the Auto class's register()) for image processors and the like
_PREPROCESSOR_REGISTRATIONS = [
    (AutoImageProcessor, LNormViTConfig, {"slow_image_processor_class": LNormViTImageProcessor}),
    (AutoFeatureExtractor, LNormSpeechConfig, {"feature_extractor_class": LNormSpeechFeatureExtractor}),
    (AutoProcessor, LNormSpeechConfig, {"processor_class": LNormSpeechProcessor}),
    (AutoImageProcessor, LNormVisionTextConfig, {"slow_image_processor_class": LNormViTImageProcessor}),
    (AutoProcessor, LNormVisionTextConfig, {"processor_class": LNormVisionTextProcessor}),
]


def register_auto_classes() -> None:
    """Register every family config and head with the Auto classes (idempotent; runs on import).

    Configs go to ``AutoConfig`` under their ``lnorm-*`` model types, the heads to
    their Auto model classes, the processors to ``AutoImageProcessor``,
    ``AutoFeatureExtractor`` and ``AutoProcessor``. A registration that already
    exists is left as it is; an image processor whose backend (Pillow) is missing
    is skipped, the models still register.

    Examples:
        >>> from transformers import AutoConfig, AutoModelForSeq2SeqLM
        >>> from hf_lnorm.models import register_auto_classes
        >>> register_auto_classes()  # already done by ``import hf_lnorm``; calling again changes nothing
        >>> config = AutoConfig.for_model("lnorm-seq2seq", vocab_size=50, hidden_size=32, num_hidden_layers=1,
        ...                               num_attention_heads=4)
        >>> type(AutoModelForSeq2SeqLM.from_config(config)).__name__
        'LNormSeq2SeqForConditionalGeneration'
    """
    for config_class, auto_class, model_class in _REGISTRATIONS:
        try:
            AutoConfig.register(config_class.model_type, config_class)
        except ValueError:  # already registered (module reloaded)
            pass
        try:
            auto_class.register(config_class, model_class)
        except ValueError:
            pass
    for auto_class, config_class, kwargs in _PREPROCESSOR_REGISTRATIONS:
        try:
            auto_class.register(config_class, **kwargs)
        except ValueError:
            pass
        except ImportError:  # transformers without a backend it wants here (AutoImageProcessor needs Pillow):
            pass  # the models still register; only Auto-loading that processor needs the backend installed


register_auto_classes()

__all__ = [
    "ImageGPTColorProcessor",
    "complete_images",
    "NORM_POSITIONS",
    "NORM_TYPES",
    "LNormGPTConfig",
    "LNormGPTForCausalLM",
    "LNormGPTForSequenceClassification",
    "LNormGPTModel",
    "LNormGPTPreTrainedModel",
    "LNormDyT",
    "LNormLayerNorm",
    "LNormSeq2SeqConfig",
    "LNormSeq2SeqForConditionalGeneration",
    "LNormSeq2SeqModel",
    "LNormSeq2SeqPreTrainedModel",
    "LNormPolicyConfig",
    "LNormPolicyModel",
    "LNormPolicyOutput",
    "LNormPolicyPreTrainedModel",
    "PolicyStep",
    "LNormViTConfig",
    "LNormViTForImageClassification",
    "LNormViTImageProcessor",
    "LNormViTModel",
    "LNormViTPreTrainedModel",
    "LNormRMSNorm",
    "LNormSpeechConfig",
    "LNormSpeechFeatureExtractor",
    "LNormSpeechForConditionalGeneration",
    "LNormSpeechModel",
    "LNormSpeechPreTrainedModel",
    "LNormSpeechProcessor",
    "build_word_tokenizer",
    "LNormVisionTextConfig",
    "LNormVisionTextForClassification",
    "LNormVisionTextModel",
    "LNormVisionTextPreTrainedModel",
    "LNormVisionTextProcessor",
    "LNormVisionTextTextConfig",
    "train_question_tokenizer",
    "register_auto_classes",
]
