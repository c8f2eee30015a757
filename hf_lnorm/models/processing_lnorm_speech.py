"""Feature extractor, word tokenizer and processor of LNormSpeech.

* ``LNormSpeechFeatureExtractor`` (``SequenceFeatureExtractor`` conventions):
  16 kHz mono audio -> log-mel frames ``(frames, feature_size)``, computed in
  numpy: a centred short-time Fourier transform (periodic Hann window from
  ``transformers.audio_utils.window_function``, ``n_fft`` / ``hop_length`` /
  ``win_length``), the power spectrum, a triangular HTK mel filter bank
  (``transformers.audio_utils.mel_filter_bank``) and ``log(max(mel, 1e-10))``;
  then, with ``normalize=True``, per-utterance mean/variance normalization of
  each mel channel (cepstral mean and variance normalization, which removes the
  volume and most of the channel). Batches are right-padded with
  ``padding_value``; ``attention_mask`` marks real frames.
* ``build_word_tokenizer(words)``: a word-level ``PreTrainedTokenizerFast``
  (``<pad>``, ``<s>``, ``</s>``, ``<unk>`` + the words; ``</s>`` appended to
  every encoded text), for closed-vocabulary recognition.
* ``LNormSpeechProcessor`` (``ProcessorMixin``): feature extractor + tokenizer;
  ``processor(audio=..., sampling_rate=16000, text=...)`` gives
  ``input_features``, ``attention_mask`` and ``labels``; ``batch_decode``.

Sampling rate: audio at any rate other than 16 kHz is refused with a
``ValueError`` naming the rate given; when ``sampling_rate`` is not passed a
``UserWarning`` says that 16 kHz is assumed (the transformers convention).

Imports only numpy, transformers and tokenizers (a transformers dependency).
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence, Union

import numpy as np
from transformers import BatchFeature, ProcessorMixin, SequenceFeatureExtractor
from transformers.audio_utils import mel_filter_bank, window_function

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
LOG_FLOOR = 1e-10  # mel energies are clipped here before the log: silence gives log(1e-10), not -inf


# --------------------------------------------------------------------------- signal processing


def power_spectrogram(waveform: np.ndarray, window: np.ndarray, hop_length: int) -> np.ndarray:
    """``|STFT|^2`` of a 1D signal, in float64: ``(1 + (len + 2 * (n_fft // 2) - n_fft) // hop_length, n_fft // 2 + 1)``.

    Frames are centred: the signal is reflect-padded by ``n_fft // 2`` on both sides (zero-padded when it is too
    short to reflect), as ``torch.stft(center=True)`` does.

    ``transformers.audio_utils.spectrogram`` computes the same transform but keeps each frame's spectrum in
    complex64 before squaring; that moves log-mel values by a float32 ulp or two, and the per-utterance
    normalization (division by a channel's standard deviation, as small as 0.02 for steady sounds) turns this
    into feature changes above 1e-4. The frames are therefore taken here, in float64 throughout.

    Args:
        waveform: 1D float samples.
        window: the analysis window zero-padded to ``n_fft`` samples
            (``window_function(win_length, "hann", frame_length=n_fft)``).
        hop_length: samples between frame starts.

    Returns:
        The power spectrum of every frame, ``(frames, n_fft // 2 + 1)`` float64.
    """
    waveform = np.asarray(waveform, dtype=np.float64)
    n_fft = len(window)
    pad = n_fft // 2
    mode = "reflect" if len(waveform) > pad else "constant"  # reflect needs more samples than the pad
    padded = np.pad(waveform, pad, mode=mode)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]  # (frames, n_fft)
    spectrum = np.fft.rfft(frames * window, n=n_fft, axis=-1)  # (frames, n_fft // 2 + 1)
    return spectrum.real**2 + spectrum.imag**2


# --------------------------------------------------------------------------- feature extractor


class LNormSpeechFeatureExtractor(SequenceFeatureExtractor):
    """Log-mel features for LNormSpeech, ``input_features`` ``(batch, frames, feature_size)``.

    Two attributes are built from the settings and not saved in the config
    (they are rebuilt when the extractor is loaded): ``window``, the periodic
    Hann window of ``win_length`` samples zero-padded to ``n_fft`` (float64),
    and ``mel_filters``, the HTK mel filter bank ``(n_fft // 2 + 1,
    feature_size)`` (float32).

    Args:
        feature_size: number of mel channels (the model's ``num_mel_bins``).
        sampling_rate: the only accepted audio rate (16000).
        padding_value: value of padded frames.
        n_fft: FFT size in samples (400: 25 ms at 16 kHz).
        hop_length: samples between frames (160: 10 ms at 16 kHz).
        win_length: window length in samples; at most ``n_fft``.
        f_min: lowest frequency of the mel filters, in Hz.
        f_max: highest frequency of the mel filters; defaults to half the sampling rate.
        normalize: per-utterance mean/variance normalization of every mel channel.
        return_attention_mask: return the frame mask by default.
        **kwargs (Any): other ``SequenceFeatureExtractor`` arguments.

    Raises:
        ValueError: ``win_length > n_fft``, ``hop_length < 1`` or a frequency range outside ``[0, sampling_rate / 2]``.

    Examples:
        >>> import numpy as np
        >>> from hf_lnorm.models import LNormSpeechFeatureExtractor
        >>> extractor = LNormSpeechFeatureExtractor()
        >>> batch = extractor([np.zeros(16000), np.zeros(8000)], sampling_rate=16000, return_tensors="pt")
        >>> batch["input_features"].shape, batch["attention_mask"].sum(-1).tolist()
        (torch.Size([2, 101, 80]), [101, 51])
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 80,
        sampling_rate: int = 16000,
        padding_value: float = 0.0,
        n_fft: int = 400,
        hop_length: int = 160,
        win_length: int = 400,
        f_min: float = 20.0,
        f_max: Optional[float] = None,
        normalize: bool = True,
        return_attention_mask: bool = True,
        **kwargs,
    ):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value,
                         return_attention_mask=return_attention_mask, **kwargs)
        if win_length > n_fft:
            raise ValueError(f"win_length={win_length} must not exceed n_fft={n_fft}")
        if hop_length < 1:
            raise ValueError(f"hop_length={hop_length} must be a positive number of samples")
        top = float(f_max if f_max is not None else sampling_rate / 2)
        if not 0 <= f_min < top <= sampling_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sampling_rate / 2, got f_min={f_min}, f_max={f_max}, sampling_rate={sampling_rate}")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.f_min = f_min
        self.f_max = f_max
        self.normalize = normalize
        # `window` and `mel_filters` are the two attribute names FeatureExtractionMixin.to_dict leaves out of the config
        self.window = window_function(win_length, "hann", periodic=True, frame_length=n_fft, center=True)
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=feature_size,
            min_frequency=float(f_min),
            max_frequency=top,
            sampling_rate=sampling_rate,
            norm=None,
            mel_scale="htk",
        ).astype(np.float32)  # float32 filters are part of the feature definition the models were trained on

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples: ``1 + num_samples // hop_length``.

        Args:
            num_samples: length of a waveform.

        Returns:
            The number of feature frames ``extract`` gives for it.
        """
        return 1 + num_samples // self.hop_length

    def extract(self, waveform: np.ndarray) -> np.ndarray:
        """Features ``(frames, feature_size)`` of one 16 kHz mono waveform (no padding).

        Args:
            waveform: 1D float samples.

        Returns:
            float32 log-mel features, normalized per channel when ``normalize`` is set.
        """
        power = power_spectrogram(waveform, self.window, self.hop_length)  # (frames, n_fft // 2 + 1)
        features = np.log(np.maximum(power @ self.mel_filters, LOG_FLOOR)).astype(np.float32)  # (frames, feature_size)
        if self.normalize:
            mean = features.mean(axis=0, keepdims=True)
            std = features.std(axis=0, keepdims=True)
            features = (features - mean) / np.maximum(std, 1e-5)
        return features.astype(np.float32)

    def _as_batch(self, raw_speech) -> List[np.ndarray]:
        if isinstance(raw_speech, np.ndarray):
            if raw_speech.ndim == 1:
                items = [raw_speech]
            elif raw_speech.ndim == 2:
                items = list(raw_speech)
            else:
                raise ValueError(
                    f"raw_speech must be a 1D mono waveform or a batch of them, got an array of shape {raw_speech.shape}"
                )
        elif isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("raw_speech is an empty list; pass a 1D waveform or a list of 1D waveforms")
            first = raw_speech[0]
            items = [raw_speech] if np.isscalar(first) else list(raw_speech)
        elif hasattr(raw_speech, "numpy"):  # a torch tensor
            return self._as_batch(raw_speech.detach().cpu().numpy())
        else:
            raise TypeError(f"raw_speech must be a numpy array, a list of arrays or a torch tensor, got {type(raw_speech).__name__}")
        batch = []
        for i, item in enumerate(items):
            item = item.detach().cpu().numpy() if hasattr(item, "detach") else np.asarray(item)
            if item.ndim != 1:
                raise ValueError(
                    f"waveform {i} has shape {item.shape}; LNormSpeechFeatureExtractor takes mono audio, one 1D array "
                    "per utterance (average the channels of stereo audio first)"
                )
            if item.size == 0:
                raise ValueError(f"waveform {i} is empty")
            if not np.issubdtype(item.dtype, np.floating):
                raise ValueError(f"waveform {i} has dtype {item.dtype}; pass float samples in [-1, 1] (divide int16 PCM by 32768)")
            batch.append(item.astype(np.float32))
        return batch

    def __call__(
        self,
        raw_speech,
        sampling_rate: Optional[int] = None,
        padding: Union[bool, str] = True,
        max_length: Optional[int] = None,
        truncation: bool = False,
        pad_to_multiple_of: Optional[int] = None,
        return_attention_mask: Optional[bool] = None,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        """Featurize one waveform or a batch.

        Args:
            raw_speech (numpy.ndarray | list | torch.Tensor): a 1D float array (one utterance), a 2D array
                or list of 1D arrays (a batch).
            sampling_rate: rate of the audio; must be ``self.sampling_rate`` (16000). ``None`` warns and assumes it.
            padding: as ``SequenceFeatureExtractor.pad`` (True: pad to the longest).
            max_length: as ``SequenceFeatureExtractor.pad``, in frames.
            truncation: as ``SequenceFeatureExtractor.pad``.
            pad_to_multiple_of: as ``SequenceFeatureExtractor.pad``, in frames.
            return_attention_mask: defaults to ``self.return_attention_mask``.
            return_tensors (str | None): ``"pt"``, ``"np"`` or ``None`` (lists).
            **kwargs (Any): accepted for ``SequenceFeatureExtractor`` compatibility; unused.

        Returns:
            ``BatchFeature`` with ``input_features`` ``(batch, frames, feature_size)`` and ``attention_mask``.

        Raises:
            ValueError: wrong sampling rate, non-mono or empty audio, integer samples.
            TypeError: ``raw_speech`` is not an array, a list of arrays or a tensor.
        """
        if sampling_rate is None:
            warnings.warn(
                f"{type(self).__name__} was called without sampling_rate; assuming the audio is {self.sampling_rate} Hz. "
                f"Pass sampling_rate={self.sampling_rate} to have audio at another rate refused instead of silently misread.",
                UserWarning,
                stacklevel=2,
            )
        elif int(sampling_rate) != self.sampling_rate:
            raise ValueError(
                f"audio was given at sampling_rate={sampling_rate} Hz, but {type(self).__name__} expects "
                f"{self.sampling_rate} Hz; resample it to {self.sampling_rate} Hz first (e.g. scipy.signal.resample_poly)"
            )
        features = [self.extract(w) for w in self._as_batch(raw_speech)]
        encoded = BatchFeature({"input_features": features})
        return_attention_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask
        padded = self.pad(
            encoded,
            padding=padding,
            max_length=max_length,
            truncation=truncation,
            pad_to_multiple_of=pad_to_multiple_of,
            return_attention_mask=return_attention_mask,
            return_tensors=return_tensors,
        )
        return padded


# --------------------------------------------------------------------------- tokenizer and processor


def build_word_tokenizer(words: Sequence[str]):
    """A word-level fast tokenizer over a closed vocabulary.

    Ids: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<unk>`` 3, then ``words`` in the order given. Text is split on
    whitespace and punctuation, lower-cased, and ``</s>`` is appended (the decoder's stop token).

    Args:
        words: the vocabulary (distinct, non-empty, no whitespace).

    Returns:
        (transformers.PreTrainedTokenizerFast): the tokenizer (saves and loads with ``AutoTokenizer``).

    Raises:
        ValueError: duplicate words, words with whitespace, empty words or special tokens.

    Examples:
        >>> from hf_lnorm.models import build_word_tokenizer
        >>> tokenizer = build_word_tokenizer(["yes", "no", "up", "down"])
        >>> tokenizer("Yes up")["input_ids"]
        [4, 6, 2]
        >>> tokenizer.decode([4, 6, 2], skip_special_tokens=True)
        'yes up'
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = list(words)
    bad = [w for w in words if not w or any(c.isspace() for c in w) or w in SPECIAL_TOKENS]
    if bad or len(set(words)) != len(words):
        raise ValueError(f"the vocabulary must be distinct words without whitespace and not special tokens; problems: {bad or 'duplicates'}")
    vocab = {token: i for i, token in enumerate(list(SPECIAL_TOKENS) + words)}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")


class LNormSpeechProcessor(ProcessorMixin):
    """Feature extractor + tokenizer for LNormSpeech.

    ``processor(audio=..., sampling_rate=16000, text=..., return_tensors="pt")`` returns the model inputs
    and, with ``text``, ``labels`` (padded with -100); ``batch_decode`` turns generated ids into text.
    ``save_pretrained`` writes this file with an ``auto_map``, so ``AutoProcessor.from_pretrained(folder,
    trust_remote_code=True)`` loads it where hf_lnorm is not installed.

    Args:
        feature_extractor (LNormSpeechFeatureExtractor): the feature extractor.
        tokenizer (transformers.PreTrainedTokenizerFast): the text tokenizer (``build_word_tokenizer``).
        **kwargs (Any): passed to ``ProcessorMixin``.

    Examples:
        >>> import numpy as np
        >>> from hf_lnorm.models import LNormSpeechFeatureExtractor, LNormSpeechProcessor, build_word_tokenizer
        >>> processor = LNormSpeechProcessor(LNormSpeechFeatureExtractor(feature_size=40),
        ...                                  build_word_tokenizer(["yes", "no"]))
        >>> batch = processor(audio=[np.zeros(16000), np.zeros(8000)], sampling_rate=16000,
        ...                   text=["yes", "no no"], return_tensors="pt")
        >>> batch["input_features"].shape, batch["labels"].tolist()
        (torch.Size([2, 101, 40]), [[4, 2, -100], [5, 5, 2]])
        >>> processor.batch_decode([[4, 2]], skip_special_tokens=True)
        ['yes']
    """

    attributes = ["feature_extractor", "tokenizer"]
    if not hasattr(ProcessorMixin, "get_attributes"):  # transformers 4.x: load both parts through their Auto classes
        feature_extractor_class = "AutoFeatureExtractor"
        tokenizer_class = "AutoTokenizer"

    def __init__(self, feature_extractor, tokenizer, **kwargs):
        super().__init__(feature_extractor, tokenizer, **kwargs)

    def __call__(self, audio=None, sampling_rate: Optional[int] = None, text=None, return_tensors=None, **kwargs) -> BatchFeature:
        """Features of ``audio`` and/or ``labels`` from ``text``.

        Args:
            audio (numpy.ndarray | list | torch.Tensor | None): one waveform or a batch (see
                ``LNormSpeechFeatureExtractor.__call__``).
            sampling_rate: rate of ``audio`` (must be 16000).
            text (str | list[str] | None): transcript(s) for training labels.
            return_tensors (str | None): ``"pt"``, ``"np"`` or ``None``.
            **kwargs (Any): passed to the feature extractor (``padding``, ``max_length`` ...).

        Returns:
            ``BatchFeature`` with ``input_features`` and ``attention_mask`` (from ``audio``) and
                ``labels`` (from ``text``, padding as -100).

        Raises:
            ValueError: neither ``audio`` nor ``text`` given, or audio the feature extractor refuses.
        """
        if audio is None and text is None:
            raise ValueError("pass audio=..., text=... or both")
        out = BatchFeature()
        if audio is not None:
            out.update(self.feature_extractor(audio, sampling_rate=sampling_rate, return_tensors=return_tensors, **kwargs))
        if text is not None:
            encoded = self.tokenizer(text, padding=True, return_tensors=return_tensors)
            labels = encoded["input_ids"]
            if return_tensors is not None:
                labels = labels.masked_fill(encoded["attention_mask"] == 0, -100) if hasattr(labels, "masked_fill") else \
                    np.where(encoded["attention_mask"] == 0, -100, labels)
            elif isinstance(text, (list, tuple)):
                labels = [[t if m else -100 for t, m in zip(ids, mask)] for ids, mask in zip(labels, encoded["attention_mask"])]
            out["labels"] = labels
        if return_tensors is not None:
            out = BatchFeature(dict(out), tensor_type=return_tensors)
        return out

    def batch_decode(self, *args, **kwargs):
        """``tokenizer.batch_decode`` (pass ``skip_special_tokens=True`` for plain text).

        Args:
            *args (Any): token id sequences, as ``generate()`` returns them.
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
        return list(self.feature_extractor.model_input_names)


__all__ = [
    "LNormSpeechFeatureExtractor",
    "LNormSpeechProcessor",
    "build_word_tokenizer",
    "power_spectrogram",
]

# save_pretrained writes an ``auto_map`` and copies this file next to the processor files, so the feature
# extractor and processor load with ``trust_remote_code=True`` where hf_lnorm is not installed.
LNormSpeechFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
LNormSpeechProcessor.register_for_auto_class("AutoProcessor")
