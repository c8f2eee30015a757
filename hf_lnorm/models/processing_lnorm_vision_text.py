"""Processor of LNormVisionText: an ``LNormViTImageProcessor`` for the images and a fast tokenizer for the questions.

``LNormVisionTextProcessor(images=..., text=..., return_tensors="pt")`` returns
``pixel_values`` ``(N, C, H, W)``, ``input_ids`` and ``attention_mask`` ``(N, T)``
(right padding to the longest question, truncated to ``max_length``): exactly the
inputs of ``LNormVisionTextForClassification``. ``save_pretrained`` /
``from_pretrained`` (and ``AutoProcessor`` once ``hf_lnorm`` is imported) follow
the ``ProcessorMixin`` conventions on transformers 4.57 and 5.x.

``train_question_tokenizer`` builds the word-level tokenizer from question texts
with the ``tokenizers`` library (lower-cased, split on whitespace and
punctuation; ``[PAD]`` = 0, ``[UNK]`` = 1).

Images with the wrong channel count (a grayscale or RGBA image for an RGB
model) raise a ``ValueError`` naming the shape given and the channels expected.

Examples:
    >>> import numpy as np
    >>> from hf_lnorm.models import LNormViTImageProcessor, LNormVisionTextProcessor, train_question_tokenizer
    >>> tokenizer = train_question_tokenizer(["what color is the shape?", "is there a circle?"])
    >>> processor = LNormVisionTextProcessor(LNormViTImageProcessor(size=32), tokenizer)
    >>> batch = processor(images=np.zeros((2, 64, 64, 3), np.uint8), text=["is there a circle?", "what color?"], return_tensors="pt")
    >>> batch["pixel_values"].shape, batch["input_ids"].shape
    (torch.Size([2, 3, 32, 32]), torch.Size([2, 5]))
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Union

import numpy as np
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .processing_lnorm_vit import LNormViTImageProcessor

PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"


def train_question_tokenizer(texts: Iterable[str], min_frequency: int = 1, max_length: int = 32):
    """Train a word-level tokenizer on question texts.

    Args:
        texts: training questions.
        min_frequency: words seen fewer times map to ``[UNK]``.
        max_length: ``model_max_length`` of the tokenizer (match ``text_config.max_position_embeddings``).

    Returns:
        (transformers.PreTrainedTokenizerFast): the tokenizer (``AutoTokenizer`` loads it back); ``[PAD]`` has
            id 0, ``[UNK]`` id 1.

    Raises:
        ValueError: no non-empty question text.

    Examples:
        >>> from hf_lnorm.models import train_question_tokenizer
        >>> tokenizer = train_question_tokenizer(["What color is the shape?", "Is there a circle?"])
        >>> tokenizer.pad_token_id, tokenizer.unk_token_id
        (0, 1)
        >>> tokenizer.convert_ids_to_tokens(tokenizer("is there a square?")["input_ids"])
        ['is', 'there', 'a', '[UNK]', '?']
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer
    from transformers import PreTrainedTokenizerFast

    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("train_question_tokenizer needs at least one non-empty question text")
    tokenizer = Tokenizer(WordLevel(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = WordLevelTrainer(special_tokens=[PAD_TOKEN, UNK_TOKEN], min_frequency=min_frequency)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD_TOKEN, unk_token=UNK_TOKEN, model_max_length=max_length, padding_side="right"
    )


class LNormVisionTextProcessor(ProcessorMixin):
    """Image processor + tokenizer for ``LNormVisionTextForClassification``.

    ``save_pretrained`` writes this file (and the image processor's) with an
    ``auto_map``, so ``AutoProcessor.from_pretrained(folder, trust_remote_code=True)``
    loads it where hf_lnorm is not installed.

    Args:
        image_processor (LNormViTImageProcessor): its ``size`` and ``num_channels`` must match the
            model's ``vision_config``.
        tokenizer (transformers.PreTrainedTokenizerFast): a fast tokenizer with a pad token
            (``train_question_tokenizer`` makes one).
        **kwargs (Any): passed to ``ProcessorMixin``.

    Raises:
        TypeError: ``image_processor`` is not an ``LNormViTImageProcessor``.
        ValueError: the tokenizer has no pad token.

    Examples:
        >>> import numpy as np
        >>> from hf_lnorm.models import LNormViTImageProcessor, LNormVisionTextProcessor, train_question_tokenizer
        >>> processor = LNormVisionTextProcessor(LNormViTImageProcessor(size=32),
        ...                                      train_question_tokenizer(["is there a circle?"]))
        >>> batch = processor(images=np.zeros((1, 32, 32, 3), np.uint8), text="is there a circle?")
        >>> sorted(batch), batch["attention_mask"].tolist()
        (['attention_mask', 'input_ids', 'pixel_values'], [[1, 1, 1, 1, 1]])
    """

    attributes = ["image_processor", "tokenizer"]
    _auto_class = "AutoProcessor"  # save_pretrained writes this file (and its imports) with an auto_map: remote code
    if not hasattr(ProcessorMixin, "get_attributes"):  # transformers 4.x looks the classes up by name
        image_processor_class = "LNormViTImageProcessor"
        tokenizer_class = "PreTrainedTokenizerFast"

    def __init__(self, image_processor, tokenizer, **kwargs):
        if not isinstance(image_processor, LNormViTImageProcessor) and type(image_processor).__name__ != "LNormViTImageProcessor":
            raise TypeError(f"image_processor must be an LNormViTImageProcessor, got {type(image_processor).__name__}")
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError("the tokenizer needs a pad token (train_question_tokenizer sets [PAD])")
        super().__init__(image_processor, tokenizer, **kwargs)

    def check_argument_for_proper_class(self, argument_name, argument):
        """Types are checked by ``__init__`` itself: no lookup in transformers' registries.

        Those registries lack ``LNormViTImageProcessor`` where hf_lnorm is not imported (remote code).

        Args:
            argument_name (str): ``"image_processor"`` or ``"tokenizer"``.
            argument (object): the object given.

        Returns:
            (type): the argument's type.
        """
        return type(argument)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        """Load the two sub-processors with their own classes (the same on transformers 4.57 and 5.x, and as
        remote code without hf_lnorm)."""
        from transformers import AutoTokenizer

        kwargs = {k: v for k, v in kwargs.items() if k not in ("_from_auto", "use_fast")}
        image_processor = LNormViTImageProcessor.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs)
        return [image_processor, tokenizer]

    def __call__(
        self,
        images=None,
        text: Optional[Union[str, List[str]]] = None,
        return_tensors: Optional[str] = "pt",
        padding: Union[bool, str] = True,
        truncation: bool = True,
        max_length: Optional[int] = None,
        **kwargs,
    ) -> BatchFeature:
        """Encode images and questions (one image per question).

        Args:
            images (PIL.Image.Image | numpy.ndarray | torch.Tensor | list | None): one image or a batch
                (see ``LNormViTImageProcessor``).
            text: one question or a list.
            return_tensors: ``"pt"``, ``"np"`` or ``None``.
            padding: passed to the tokenizer (True: pad to the longest question).
            truncation: passed to the tokenizer.
            max_length: passed to the tokenizer; defaults to its ``model_max_length``.
            **kwargs (Any): passed to the image processor (``input_data_format`` ...).

        Returns:
            ``BatchFeature`` with ``pixel_values`` (when ``images``) and ``input_ids`` / ``attention_mask``
                (when ``text``).

        Raises:
            ValueError: neither images nor text, a different number of images and questions, or an
                image the image processor refuses.
            TypeError: ``text`` is not a string or a list of strings.
        """
        if images is None and text is None:
            raise ValueError("pass images=..., text=... or both")
        out = {}
        if images is not None:
            out.update(self.image_processor(images, return_tensors=return_tensors, **kwargs))
        if text is not None:
            if not isinstance(text, str) and not (isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text)):
                raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
            if max_length is None:
                max_length = self.tokenizer.model_max_length
            encoded = self.tokenizer(
                text, padding=padding, truncation=truncation, max_length=max_length, return_tensors=return_tensors,
                return_token_type_ids=False,
            )
            out.update(encoded)
            if images is not None:
                n_images = len(out["pixel_values"])
                n_texts = 1 if isinstance(text, str) else len(text)
                if n_images != n_texts:
                    raise ValueError(f"got {n_images} image(s) and {n_texts} question(s); pass one image per question")
        return BatchFeature(out, tensor_type=return_tensors)

    def batch_decode(self, *args, **kwargs):
        """``tokenizer.batch_decode``.

        Args:
            *args (Any): token id sequences.
            **kwargs (Any): passed to ``tokenizer.batch_decode``.

        Returns:
            (list[str]): one string per sequence.
        """
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        """``tokenizer.decode``.

        Args:
            *args (Any): one sequence of token ids.
            **kwargs (Any): passed to ``tokenizer.decode``.

        Returns:
            (str): the text.
        """
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return ["pixel_values", "input_ids", "attention_mask"]


__all__ = ["LNormVisionTextProcessor", "train_question_tokenizer"]
