"""LNormSpeech log-mel features against a frozen reference implementation (kept below, only here).

Trained LNormSpeech checkpoints expect exactly these features, so the feature extractor, built on
``transformers.audio_utils`` (window, mel filter bank), must reproduce the reference within 1e-5 (max abs) after
the per-utterance normalization, which amplifies tiny log-mel differences by 1 / (channel std).
"""

import numpy as np
import pytest

from hf_lnorm.models import LNormSpeechFeatureExtractor

RATE = 16000
TOLERANCE = 1e-5


# --------------------------------------------------------------------------- reference (numpy only, frozen)


def _ref_hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _ref_mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def _ref_mel_filter_bank(n_mels, n_fft, sampling_rate, f_min, f_max):
    bins = np.linspace(0.0, sampling_rate / 2, n_fft // 2 + 1)
    points = _ref_mel_to_hz(np.linspace(_ref_hz_to_mel(f_min), _ref_hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None).T.astype(np.float32)


def _ref_power_spectrogram(waveform, n_fft, hop_length, win_length):
    waveform = np.asarray(waveform, dtype=np.float64)
    pad = n_fft // 2
    padded = np.pad(waveform, pad, mode="reflect" if len(waveform) > pad else "constant")
    window = np.zeros(n_fft)
    start = (n_fft - win_length) // 2
    window[start : start + win_length] = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win_length) / win_length)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    spectrum = np.fft.rfft(frames * window, n=n_fft, axis=-1)
    return spectrum.real**2 + spectrum.imag**2


def reference_features(waveform, feature_size=80, n_fft=400, hop_length=160, win_length=400, f_min=20.0, f_max=None, normalize=True):
    """Features ``(frames, feature_size)`` float32 of one waveform, as LNormSpeech checkpoints were trained on."""
    waveform = np.asarray(waveform).astype(np.float32)
    power = _ref_power_spectrogram(waveform, n_fft, hop_length, win_length)
    filters = _ref_mel_filter_bank(feature_size, n_fft, RATE, float(f_min), float(f_max if f_max is not None else RATE / 2))
    features = np.log(np.maximum(power @ filters, 1e-10)).astype(np.float32)
    if normalize:
        features = (features - features.mean(axis=0, keepdims=True)) / np.maximum(features.std(axis=0, keepdims=True), 1e-5)
    return features.astype(np.float32)


# --------------------------------------------------------------------------- signals


def _signals():
    rng = np.random.default_rng(0)

    def sine_noise(n, freq=440.0, noise=0.01):
        t = np.arange(n) / RATE
        return (0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(n)).astype(np.float32)

    t = np.arange(RATE) / RATE
    signals = {f"sine+noise-{n}": sine_noise(n) for n in (1, 150, 200, 201, 399, 400, 1601, 8000, 16000, 48123)}
    signals.update(
        {
            "silence": np.zeros(RATE, dtype=np.float32),
            "pure-tone": (0.3 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32),
            "quiet-noise": (1e-4 * rng.standard_normal(RATE)).astype(np.float32),
            "chirp": (0.5 * np.sin(2 * np.pi * (100.0 + 3000.0 * t) * t)).astype(np.float32),
            "speech-like": (sine_noise(RATE, 180.0, 0.05) * (0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t))).astype(np.float32),
            "float64-input": sine_noise(12345, 2000.0).astype(np.float64),
        }
    )
    return signals


SIGNALS = _signals()
CONFIGS = {
    "default": dict(),
    "16-mels": dict(feature_size=16),
    "short-window": dict(feature_size=40, n_fft=512, win_length=320, hop_length=128),
    "band-limited": dict(feature_size=24, f_min=0.0, f_max=7600.0),
    "unnormalized": dict(feature_size=32, normalize=False),
}


@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_features_match_the_reference_implementation(config):
    extractor = LNormSpeechFeatureExtractor(**CONFIGS[config])
    for name, wave in SIGNALS.items():
        ours = extractor(wave, sampling_rate=RATE, return_tensors="np")["input_features"][0]
        ref = reference_features(wave, **CONFIGS[config])
        assert ours.dtype == np.float32 and ours.shape == ref.shape == (extractor.num_frames(len(wave)), extractor.feature_size), name
        assert np.isfinite(ours).all(), name
        err = float(np.abs(ours - ref).max())
        assert err <= TOLERANCE, (name, err)


def test_padded_batch_matches_the_reference_per_utterance():
    extractor = LNormSpeechFeatureExtractor(feature_size=16)
    names = ["sine+noise-16000", "sine+noise-201", "silence", "sine+noise-8000", "chirp"]
    waves = [SIGNALS[n] for n in names]
    batch = extractor(waves, sampling_rate=RATE, return_tensors="np")
    feats, mask = batch["input_features"], batch["attention_mask"]
    frames = [1 + len(w) // 160 for w in waves]
    assert feats.shape == (5, max(frames), 16) and feats.dtype == np.float32
    assert mask.sum(-1).tolist() == frames
    for i, wave in enumerate(waves):
        ref = reference_features(wave, feature_size=16)
        assert float(np.abs(feats[i, : frames[i]] - ref).max()) <= TOLERANCE, names[i]
        assert np.all(feats[i, frames[i] :] == extractor.padding_value)


def test_window_and_filters_are_rebuilt_not_saved(tmp_path):
    extractor = LNormSpeechFeatureExtractor(feature_size=24, n_fft=512, win_length=320, f_max=7600.0)
    assert extractor.window.shape == (512,) and extractor.mel_filters.shape == (257, 24)
    saved = extractor.to_dict()
    assert "window" not in saved and "mel_filters" not in saved
    assert {k: saved[k] for k in ("feature_size", "n_fft", "win_length", "hop_length", "f_min", "f_max", "normalize")} == dict(
        feature_size=24, n_fft=512, win_length=320, hop_length=160, f_min=20.0, f_max=7600.0, normalize=True
    )
    extractor.save_pretrained(tmp_path)
    loaded = LNormSpeechFeatureExtractor.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.window, extractor.window)
    np.testing.assert_array_equal(loaded.mel_filters, extractor.mel_filters)
    np.testing.assert_array_equal(loaded.mel_filters, _ref_mel_filter_bank(24, 512, RATE, 20.0, 7600.0))


@pytest.mark.parametrize(
    "kwargs,needles",
    [
        (dict(f_min=9000.0), ["f_min=9000.0", "sampling_rate / 2"]),
        (dict(f_max=9000.0), ["f_max=9000.0", "sampling_rate=16000"]),
        (dict(win_length=500), ["win_length=500", "n_fft=400"]),
        (dict(hop_length=0), ["hop_length=0"]),
    ],
)
def test_bad_settings_are_refused(kwargs, needles):
    with pytest.raises(ValueError) as info:
        LNormSpeechFeatureExtractor(**kwargs)
    for needle in needles:
        assert needle in str(info.value)
