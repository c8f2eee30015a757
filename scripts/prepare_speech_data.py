"""Synthesize the offline speech-recognition data set with espeak-ng (see shared DATA.md).

    python scripts/prepare_speech_data.py                       # defaults below -> data/cache/speech/
    python scripts/prepare_speech_data.py --train 6000 --test 600 --seed 0

Closed vocabulary (21 words; ``VOCABULARY`` below):

* playing cards, following the JSGF grammar of pocketsphinx-testdata's ``cards``
  set: ranks ``ace two three four five six seven eight nine ten jack queen king``,
  ``of``, suits ``clubs diamonds hearts spades``. An utterance is one, two or
  three cards (``<rank> [of] <suit>``), a rank followed by a card, or two ranks;
* digit strings of one to five digits from ``zero one two ... nine oh`` (the
  TIDIGITS vocabulary).

Half the utterances are cards, half digit strings. Each is spoken by one
espeak-ng English voice (accent) combined with a voice variant (``+m3``,
``+f2``, ``+klatt`` ...: pitch, formants, glottal source), a random speed
(``-s`` 120-210 words per minute), pitch (``-p`` 25-75) and pause between
words (``-g`` 0-6, units of 10 ms). The *held-out voice* ``en-gb-scotland`` (Scottish accent) is never
used for training: the test split is spoken only by it, with the same variants.
A validation split (for model selection) comes from the training voices.

espeak-ng writes 22,050 Hz 16-bit mono WAV; it is read with the stdlib ``wave``
module and resampled to 16 kHz with a polyphase filter (``scipy.signal.resample_poly``,
up 320 / down 441, exact rational ratio).

Outputs (git-ignored, rebuilt by this script; every file written to a temporary
path and renamed):

* ``data/cache/speech/{train,validation,test}.npz``: ``audio`` (all utterances
  concatenated, int16 at 16 kHz), ``offsets`` (start of each utterance, plus the
  end), ``text``, ``voice``;
* ``data/cache/speech/manifest.json``: vocabulary, voices, counts, durations.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import wave

import numpy as np
from scipy.signal import resample_poly

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "data", "cache", "speech")

RANKS = ["ace", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "jack", "queen", "king"]
SUITS = ["clubs", "diamonds", "hearts", "spades"]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh"]
VOCABULARY = sorted(set(RANKS) | set(SUITS) | set(DIGITS) | {"of"})

TRAIN_VOICES = ["en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
HELD_OUT_VOICE = "en-gb-scotland"
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt2", "klatt3", "klatt4", "andy", "annie", "steph", "linda", "john", "david", "ed"]
ESPEAK_RATE = 22050
TARGET_RATE = 16000


def card_phrase(rng: random.Random) -> str:
    """One utterance of the pocketsphinx ``cards`` grammar."""

    def card() -> str:
        rank, suit = rng.choice(RANKS), rng.choice(SUITS)
        return f"{rank} of {suit}" if rng.random() < 0.85 else f"{rank} {suit}"

    kind = rng.random()
    if kind < 0.45:
        return card()
    if kind < 0.7:
        return f"{card()} {card()}"
    if kind < 0.85:
        return f"{card()} {card()} {card()}"
    if kind < 0.93:
        return f"{rng.choice(RANKS)} {card()}"
    return f"{rng.choice(RANKS)} {rng.choice(RANKS)}"


def digit_string(rng: random.Random) -> str:
    return " ".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 5)))


def make_text(rng: random.Random) -> str:
    return card_phrase(rng) if rng.random() < 0.5 else digit_string(rng)


def read_wav(path: str) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV with the stdlib; returns (float32 mono in [-1, 1], rate)."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got sample width {w.getsampwidth()} bytes")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1)
    return data, rate


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    if rate == TARGET_RATE:
        return audio.astype(np.float32)
    g = np.gcd(rate, TARGET_RATE)
    return resample_poly(audio, TARGET_RATE // g, rate // g).astype(np.float32)


def synthesize(text: str, voice: str, variant: str, rng: random.Random, workdir: str) -> np.ndarray:
    path = os.path.join(workdir, "utt.wav")
    cmd = ["espeak-ng", "-v", f"{voice}+{variant}", "-s", str(rng.randint(120, 210)), "-p", str(rng.randint(25, 75)),
           "-g", str(rng.randint(0, 6)), "-w", path, text]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not os.path.exists(path):
        raise RuntimeError(f"espeak-ng failed for voice {voice}+{variant}: {res.stderr.strip()}")
    audio, rate = read_wav(path)
    os.remove(path)
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz, expected {ESPEAK_RATE}")
    return to_16k(audio, rate)


def build_split(n: int, voices: list[str], rng: random.Random, workdir: str, name: str) -> dict:
    audios, texts, used = [], [], []
    t0 = time.time()
    for i in range(n):
        text = make_text(rng)
        voice, variant = rng.choice(voices), rng.choice(VARIANTS)
        audio = synthesize(text, voice, variant, rng, workdir)
        audios.append(np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16))
        texts.append(text)
        used.append(f"{voice}+{variant}")
        if (i + 1) % 1000 == 0:
            print(f"  {name}: {i + 1}/{n} ({time.time() - t0:.0f} s)", flush=True)
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in audios])
    return {"audio": np.concatenate(audios), "offsets": offsets, "text": np.array(texts), "voice": np.array(used)}


def save_npz(path: str, arrays: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".npz")
    os.close(fd)
    np.savez(tmp, **arrays)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_split(name: str, directory: str = OUT_DIR) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Load one split written by this script: (float32 16 kHz arrays, transcripts, voices)."""
    path = os.path.join(directory, f"{name}.npz")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: run `python scripts/prepare_speech_data.py` first")
    with np.load(path) as z:
        audio, offsets = z["audio"], z["offsets"]
        arrays = [audio[offsets[i]:offsets[i + 1]].astype(np.float32) / 32768.0 for i in range(len(offsets) - 1)]
        return arrays, [str(t) for t in z["text"]], [str(v) for v in z["voice"]]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", type=int, default=6000, help="training utterances (training voices)")
    p.add_argument("--validation", type=int, default=300, help="validation utterances (training voices)")
    p.add_argument("--test", type=int, default=600, help="test utterances (held-out voice only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=OUT_DIR)
    args = p.parse_args(argv)
    for name, value in (("--train", args.train), ("--validation", args.validation), ("--test", args.test)):
        if value < 1:
            raise SystemExit(f"prepare_speech_data: {name} must be >= 1, got {value}")
    try:
        subprocess.run(["espeak-ng", "--version"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"prepare_speech_data: espeak-ng is needed (apt-get install espeak-ng): {exc}")
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    manifest = {"vocabulary": VOCABULARY, "train_voices": TRAIN_VOICES, "held_out_voice": HELD_OUT_VOICE,
                "variants": VARIANTS, "sampling_rate": TARGET_RATE, "seed": args.seed, "splits": {}}
    with tempfile.TemporaryDirectory() as work:
        for offset, (name, n, voices) in enumerate((("train", args.train, TRAIN_VOICES),
                                                    ("validation", args.validation, TRAIN_VOICES),
                                                    ("test", args.test, [HELD_OUT_VOICE]))):
            rng = random.Random(args.seed * 1000 + offset)
            split = build_split(n, voices, rng, work, name)
            save_npz(os.path.join(args.out, f"{name}.npz"), split)
            hours = len(split["audio"]) / TARGET_RATE / 3600
            manifest["splits"][name] = {"utterances": n, "hours": round(hours, 3), "voices": sorted(set(voices))}
            print(f"{name}: {n} utterances, {hours:.2f} h", flush=True)
    fd, tmp = tempfile.mkstemp(dir=args.out, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(args.out, "manifest.json"))
    print(f"wrote {args.out} in {time.time() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
