"""Image processor of LNormViT: resize, rescale, normalize, channels-first ``pixel_values``.

``LNormViTImageProcessor`` follows the ``BaseImageProcessor`` conventions
(``__call__``/``preprocess`` with per-call overrides of every setting,
``save_pretrained``/``from_pretrained`` through ``preprocessor_config.json``,
``BatchFeature`` output with ``return_tensors``) but does its own array work in
numpy and torch, so it behaves the same on transformers 4.x and 5.x and needs
neither PIL nor torchvision (PIL images are accepted when PIL is installed).

It accepts one image or a batch: PIL images, numpy arrays or torch tensors,
``(H, W)`` (grayscale), ``(C, H, W)`` or ``(H, W, C)`` each, a list of those, or
a ``(N, C, H, W)`` / ``(N, H, W, C)`` array. Every image must have
``num_channels`` channels; anything else is a ``ValueError`` naming the shape
given and the channel count expected.

Saved with ``save_pretrained`` it writes this file next to
``preprocessor_config.json`` with an ``auto_map``, so
``AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)`` loads it
where hf_lnorm is not installed. This file imports only numpy, torch and
transformers.

Examples:
    >>> import numpy as np
    >>> from hf_lnorm.models import LNormViTImageProcessor
    >>> digits = np.random.default_rng(0).integers(0, 17, size=(4, 1, 8, 8))  # like sklearn's load_digits().images[:, None]
    >>> processor = LNormViTImageProcessor(size=8, num_channels=1, rescale_factor=1 / 16)
    >>> processor(digits, return_tensors="pt").pixel_values.shape
    torch.Size([4, 1, 8, 8])
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

RESAMPLE_MODES = ("nearest", "bilinear", "bicubic")
# PIL's resampling ids (transformers' PILImageResampling) for the modes above
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
DATA_FORMATS = ("channels_first", "channels_last")
RETURN_TENSORS = ("pt", "np", None)


def _size_dict(size) -> Dict[str, int]:
    """``int`` | ``(height, width)`` | ``{"height", "width"}`` -> ``{"height": h, "width": w}``."""
    if isinstance(size, bool):
        raise ValueError(f"size={size!r} is not a valid image size; give an int, (height, width) or {{'height': h, 'width': w}}")
    if isinstance(size, int):
        height = width = size
    elif isinstance(size, dict) and set(size) == {"height", "width"}:
        height, width = size["height"], size["width"]
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        height, width = size
    else:
        raise ValueError(f"size={size!r} is not a valid image size; give an int, (height, width) or {{'height': h, 'width': w}}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (height, width)):
        raise ValueError(f"size={size!r}: height and width must be positive ints")
    return {"height": int(height), "width": int(width)}


def _resample_name(resample) -> str:
    if isinstance(resample, str) and resample in RESAMPLE_MODES:
        return resample
    value = getattr(resample, "value", resample)  # PILImageResampling enum members
    if isinstance(value, int) and not isinstance(value, bool) and value in _PIL_RESAMPLE:
        return _PIL_RESAMPLE[value]
    accepted = ", ".join(repr(m) for m in RESAMPLE_MODES)
    raise ValueError(f"resample={resample!r} is not supported; accepted values: {accepted} (or PIL's NEAREST/BILINEAR/BICUBIC)")


def _per_channel(name: str, value, num_channels: int) -> List[float]:
    values = [float(value)] * num_channels if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != num_channels:
        raise ValueError(f"{name}={list(value)!r} has {len(values)} values; num_channels={num_channels} needs {num_channels} (or one number)")
    return values


def _is_pil(image) -> bool:
    return type(image).__module__.startswith("PIL.") and hasattr(image, "mode") and hasattr(image, "getbands")


def _to_numpy(image) -> np.ndarray:
    if _is_pil(image):
        return np.asarray(image)
    if torch.is_tensor(image):
        return image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        return image
    raise TypeError(f"expected a PIL image, numpy array or torch tensor, got {type(image).__name__}")


class LNormViTImageProcessor(BaseImageProcessor):
    """Turns images into the ``pixel_values`` an ``LNormViTModel`` takes: ``(N, num_channels, height, width)`` floats.

    Steps, each switchable: resize to ``size`` (torch interpolation, antialiased when shrinking), rescale
    by ``rescale_factor`` (``1/255`` for 8-bit images), normalize with ``image_mean`` / ``image_std``.

    Args:
        do_resize: resize every image to ``size``.
        size (int | tuple[int, int] | dict[str, int] | None): target side, ``(height, width)`` or
            ``{"height": h, "width": w}``; match the model's ``image_size`` (default 224).
        resample (str | int): ``"nearest"`` | ``"bilinear"`` | ``"bicubic"`` (PIL's resampling ids are accepted too).
        do_rescale: multiply pixel values by ``rescale_factor``.
        rescale_factor: e.g. ``1/255`` for 8-bit images, ``1/16`` for scikit-learn's digits.
        do_normalize: subtract ``image_mean`` and divide by ``image_std`` per channel.
        image_mean: one number or one per channel (default 0.5: with ``image_std`` 0.5, values in [-1, 1]).
        image_std: one number or one per channel (default 0.5); none may be 0.
        num_channels: channels every image must have (3 for RGB, 1 for grayscale); match the model's ``num_channels``.
        **kwargs (Any): other ``BaseImageProcessor`` arguments.

    Raises:
        ValueError: a bad ``size``, ``resample`` or ``num_channels``, a mean/std list of the wrong
            length, or a zero std.

    Examples:
        >>> import numpy as np
        >>> from hf_lnorm.models import LNormViTImageProcessor
        >>> processor = LNormViTImageProcessor(size=32)
        >>> images = [np.zeros((48, 64, 3), dtype=np.uint8), np.full((3, 32, 32), 255, dtype=np.uint8)]
        >>> pixels = processor(images, return_tensors="pt").pixel_values
        >>> pixels.shape, float(pixels.min()), float(pixels.max())
        (torch.Size([2, 3, 32, 32]), -1.0, 1.0)
        >>> processor(np.zeros((32, 32, 4)))
        Traceback (most recent call last):
        ...
        ValueError: image of shape (32, 32, 4) has 4 channel(s) (channels_last); this processor expects num_channels=3 ...
    """

    model_input_names = ["pixel_values"]
    _auto_class = "AutoImageProcessor"  # save_pretrained writes this file and an auto_map (remote code)

    def __init__(
        self,
        do_resize: bool = True,
        size=None,
        resample="bilinear",
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: Optional[Union[float, Sequence[float]]] = None,
        image_std: Optional[Union[float, Sequence[float]]] = None,
        num_channels: int = 3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_channels, int) or isinstance(num_channels, bool) or num_channels < 1:
            raise ValueError(f"num_channels={num_channels!r} must be a positive int")
        self.num_channels = num_channels
        self.do_resize = bool(do_resize)
        self.size = _size_dict(224 if size is None else size)
        self.resample = _resample_name(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = _per_channel("image_mean", 0.5 if image_mean is None else image_mean, num_channels)
        self.image_std = _per_channel("image_std", 0.5 if image_std is None else image_std, num_channels)
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std={self.image_std!r} contains 0; every std must be non-zero")

    # ------------------------------------------------------------------ input handling

    def _split_batch(self, images) -> list:
        """A flat list of single images from one image, a list of images or a 4-D batch."""
        if isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("got an empty list of images")
            flat = []
            for item in images:
                if isinstance(item, (list, tuple)) or (not _is_pil(item) and _to_numpy(item).ndim == 4):
                    flat.extend(self._split_batch(item))
                else:
                    flat.append(item)
            return flat
        if _is_pil(images):
            return [images]
        array = _to_numpy(images)
        if array.ndim == 4:
            return list(array)
        if array.ndim in (2, 3):
            return [array]
        raise ValueError(
            f"images must be (H, W), (C, H, W), (H, W, C), a list of those, or a 4-D batch; got an array of shape {array.shape}"
        )

    def _channels_first(self, image, input_data_format: Optional[str]) -> np.ndarray:
        """One image as a float32 ``(C, H, W)`` array, after checking its channel count."""
        from_pil = _is_pil(image)
        array = _to_numpy(image)
        shape = tuple(array.shape)
        if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.number)):
            raise TypeError(f"image of dtype {array.dtype} is not a numeric image")
        array = array.astype(np.float32, copy=False)
        expected = self.num_channels
        if array.ndim == 2:
            fmt, array = "channels_first", array[None]
        elif array.ndim != 3:
            raise ValueError(f"an image must be (H, W), (C, H, W) or (H, W, C); got shape {shape}")
        elif input_data_format is not None:
            if input_data_format not in DATA_FORMATS:
                raise ValueError(f"input_data_format={input_data_format!r} is not supported; accepted values: {', '.join(map(repr, DATA_FORMATS))}")
            fmt = input_data_format
        elif from_pil:
            fmt = "channels_last"
        else:
            fmt = self._infer_format(shape)
        if fmt == "channels_last":
            array = array.transpose(2, 0, 1)
        channels = array.shape[0]
        if channels != expected:
            mode = f" (PIL mode {image.mode!r})" if from_pil else ""
            raise ValueError(
                f"image of shape {shape}{mode} has {channels} channel(s) ({fmt}); this processor expects "
                f"num_channels={expected} ({'grayscale' if expected == 1 else 'RGB' if expected == 3 else f'{expected} channels'}). "
                f"Convert the images (e.g. PIL's image.convert({'L' if expected == 1 else 'RGB'!r})) or use "
                f"LNormViTImageProcessor(num_channels={channels}) with a model configured for {channels} channels"
            )
        return array

    def _infer_format(self, shape) -> str:
        first, last = shape[0], shape[-1]
        if first <= 4 < last or (first == self.num_channels and last != self.num_channels):
            return "channels_first"
        if last <= 4 < first or (last == self.num_channels and first != self.num_channels):
            return "channels_last"
        if first == last == self.num_channels:
            return "channels_first"
        raise ValueError(
            f"cannot tell the channel axis of an image of shape {shape}: pass input_data_format='channels_first' or "
            f"'channels_last' (this processor expects num_channels={self.num_channels}). A 3-D array is one image; "
            f"pass a batch of grayscale images as (N, 1, H, W) or a list"
        )

    # ------------------------------------------------------------------ transforms

    def resize(self, image: np.ndarray, size, resample="bilinear") -> np.ndarray:
        """Resize a ``(C, H, W)`` float image to ``size`` with torch interpolation (antialiased when shrinking).

        Args:
            image: a ``(C, H, W)`` float array.
            size (int | tuple[int, int] | dict[str, int]): the target size.
            resample (str | int): ``"nearest"``, ``"bilinear"`` or ``"bicubic"`` (or PIL's ids).

        Returns:
            The resized ``(C, height, width)`` array (``image`` itself when it already has that size).
        """
        size = _size_dict(size)
        mode = _resample_name(resample)
        target = (size["height"], size["width"])
        if tuple(image.shape[1:]) == target:
            return image
        tensor = torch.from_numpy(np.ascontiguousarray(image))[None]
        if mode == "nearest":
            out = F.interpolate(tensor, size=target, mode="nearest")
        else:
            shrink = target[0] < image.shape[1] or target[1] < image.shape[2]
            out = F.interpolate(tensor, size=target, mode=mode, align_corners=False, antialias=shrink)
        return out[0].numpy()

    def rescale(self, image: np.ndarray, scale: float, **kwargs) -> np.ndarray:
        """``image * scale`` as float32.

        Args:
            image: an array.
            scale: the factor, e.g. ``1/255``.
            **kwargs (Any): accepted for ``BaseImageProcessor`` compatibility; unused.

        Returns:
            The rescaled array.
        """
        return (image * np.float32(scale)).astype(np.float32, copy=False)

    def normalize(self, image: np.ndarray, mean, std, **kwargs) -> np.ndarray:
        """Per channel ``(image - mean) / std`` of a ``(C, H, W)`` image.

        Args:
            image: a ``(C, H, W)`` float array.
            mean (float | Sequence[float]): one number or one per channel.
            std (float | Sequence[float]): one number or one per channel.
            **kwargs (Any): accepted for ``BaseImageProcessor`` compatibility; unused.

        Returns:
            The normalized float32 array.

        Raises:
            ValueError: ``mean`` or ``std`` has neither one value nor one per channel.
        """
        channels = image.shape[0]
        mean = np.asarray(_per_channel("image_mean", mean, channels), dtype=np.float32)[:, None, None]
        std = np.asarray(_per_channel("image_std", std, channels), dtype=np.float32)[:, None, None]
        return ((image - mean) / std).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ entry point

    def preprocess(
        self,
        images,
        do_resize: Optional[bool] = None,
        size=None,
        resample=None,
        do_rescale: Optional[bool] = None,
        rescale_factor: Optional[float] = None,
        do_normalize: Optional[bool] = None,
        image_mean=None,
        image_std=None,
        return_tensors: Optional[str] = None,
        data_format: str = "channels_first",
        input_data_format: Optional[str] = None,
        **kwargs,
    ) -> BatchFeature:
        """Preprocess one image or a batch; every argument left ``None`` takes the processor's setting.

        ``processor(images, ...)`` calls this.

        Args:
            images (PIL.Image.Image | numpy.ndarray | torch.Tensor | list): one image or a batch:
                ``(H, W)``, ``(C, H, W)`` or ``(H, W, C)`` each, a list of those, or a 4-D batch.
            do_resize: override of the processor's setting.
            size (int | tuple[int, int] | dict[str, int] | None): override of the processor's setting.
            resample (str | int | None): override of the processor's setting.
            do_rescale: override of the processor's setting.
            rescale_factor: override of the processor's setting.
            do_normalize: override of the processor's setting.
            image_mean (float | Sequence[float] | None): override of the processor's setting.
            image_std (float | Sequence[float] | None): override of the processor's setting.
            return_tensors: ``"pt"`` (torch), ``"np"`` (numpy) or ``None`` (a list of numpy arrays).
            data_format: layout of the output: ``"channels_first"`` (what the model takes) or ``"channels_last"``.
            input_data_format: layout of 3-D inputs; inferred when ``None`` (pass it for ambiguous shapes).
            **kwargs (Any): not accepted: any other keyword is a ``TypeError``.

        Returns:
            ``BatchFeature`` with ``pixel_values`` ``(N, C, H, W)``.

        Raises:
            ValueError: an image with the wrong number of channels (naming its shape and the expected count), a bad
                layout, size or option, or images of different sizes with ``do_resize=False`` and tensors requested.
            TypeError: an object that is not an image, or an unknown keyword argument.
        """
        if kwargs:
            raise TypeError(f"unexpected argument(s) {', '.join(sorted(kwargs))} for LNormViTImageProcessor.preprocess")
        if return_tensors not in RETURN_TENSORS:
            raise ValueError(f"return_tensors={return_tensors!r} is not supported; accepted values: 'pt', 'np', None")
        if data_format not in DATA_FORMATS:
            raise ValueError(f"data_format={data_format!r} is not supported; accepted values: {', '.join(map(repr, DATA_FORMATS))}")
        do_resize = self.do_resize if do_resize is None else do_resize
        size = self.size if size is None else _size_dict(size)
        resample = self.resample if resample is None else _resample_name(resample)
        do_rescale = self.do_rescale if do_rescale is None else do_rescale
        rescale_factor = self.rescale_factor if rescale_factor is None else rescale_factor
        do_normalize = self.do_normalize if do_normalize is None else do_normalize
        image_mean = self.image_mean if image_mean is None else image_mean
        image_std = self.image_std if image_std is None else image_std

        processed = []
        for image in self._split_batch(images):
            array = self._channels_first(image, input_data_format)
            if do_resize:
                array = self.resize(array, size, resample)
            if do_rescale:
                array = self.rescale(array, rescale_factor)
            if do_normalize:
                array = self.normalize(array, image_mean, image_std)
            if data_format == "channels_last":
                array = array.transpose(1, 2, 0)
            processed.append(np.ascontiguousarray(array, dtype=np.float32))
        if return_tensors is None:
            return BatchFeature(data={"pixel_values": processed})
        shapes = {a.shape for a in processed}
        if len(shapes) > 1:
            raise ValueError(f"images have different sizes after preprocessing ({sorted(shapes)}); set do_resize=True to batch them")
        return BatchFeature(data={"pixel_values": np.stack(processed)}, tensor_type=return_tensors)


__all__ = ["LNormViTImageProcessor"]
