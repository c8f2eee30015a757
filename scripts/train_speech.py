#!/usr/bin/env python
"""Train LNormSpeech on the espeak-ng closed-vocabulary set and report word error rate on a held-out voice.

    python scripts/prepare_speech_data.py                          # -> data/cache/speech/ (espeak-ng, ~4 min)
    python scripts/train_speech.py configs/speech_espeak.json      # -> outputs/lnorm_speech_espeak/
    python scripts/train_speech.py configs/speech_espeak.json --max-steps 20 --limit 64 --output /tmp/speech-smoke
    python scripts/train_speech.py configs/speech_espeak.json --eval-only outputs/lnorm_speech_espeak   # re-evaluate

The JSON recipe gives the feature extractor, the model config, SpecAugment and the
training arguments; flags override a few of them. Steps:

1. features: every utterance through ``LNormSpeechFeatureExtractor`` (80 log-mel
   channels, per-utterance normalization); labels from a word-level tokenizer over
   the closed vocabulary of ``scripts/prepare_speech_data.py``;
2. training: a plain PyTorch loop (AdamW, warm-up + cosine, gradient clipping,
   length-bucketed batches so little compute goes to padding; teacher forcing,
   cross-entropy), SpecAugment (frequency and time masks) in the collator, a
   validation WER every ``eval_steps`` steps;
3. evaluation: greedy ``generate()`` with the KV cache on the validation split
   (training voices) and the test split (the held-out voice ``en-gb-scotland``),
   corpus WER (``hf_lnorm.recipes.speech_metrics``); then the real pocketsphinx
   test clips (``/usr/share/pocketsphinx/test/data``): the ``cards`` clips and the
   TIDIGITS clip are in the vocabulary (WER reported), the LibriVox and
   ``goforward`` clips are not (outputs reported as they are).

Writes ``model.safetensors`` + code (remote code), the processor, ``results.json``
(WERs, examples, pocketsphinx outputs, wall time) into the output folder, which is
built under a temporary name and renamed when complete. An existing output folder is
replaced only with ``--overwrite`` and only if this project wrote it
(``hf_lnorm.outputs``): a folder of other files is refused before training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import wave

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hf_lnorm.models import (  # noqa: E402
    LNormSpeechConfig,
    LNormSpeechFeatureExtractor,
    LNormSpeechForConditionalGeneration,
    LNormSpeechProcessor,
    build_word_tokenizer,
)
from hf_lnorm._machine import provenance  # noqa: E402
from hf_lnorm.outputs import OutputExistsError, check_output_dir, staged_output_dir  # noqa: E402
from hf_lnorm.recipes.speech_metrics import wer_details  # noqa: E402

POCKETSPHINX = "/usr/share/pocketsphinx/test/data"


# --------------------------------------------------------------------------- data


class SpeechCollator:
    """Pads ``input_features`` (value 0 = the normalized mean) and ``labels`` (-100); SpecAugment when ``augment``."""

    def __init__(self, spec_augment: dict | None = None, seed: int = 0):
        self.spec = spec_augment or {}
        self.augment = bool(self.spec)
        self.gen = torch.Generator().manual_seed(seed)

    def _mask(self, feats: torch.Tensor, length: int) -> torch.Tensor:
        feats = feats.clone()
        n_mels = feats.shape[1]
        for _ in range(self.spec.get("freq_masks", 0)):
            width = int(torch.randint(0, self.spec.get("freq_width", 0) + 1, (1,), generator=self.gen))
            start = int(torch.randint(0, max(1, n_mels - width), (1,), generator=self.gen))
            feats[:, start : start + width] = 0.0
        max_time = min(self.spec.get("time_width", 0), int(length * self.spec.get("time_fraction", 0.2)))
        for _ in range(self.spec.get("time_masks", 0)):
            width = int(torch.randint(0, max_time + 1, (1,), generator=self.gen))
            start = int(torch.randint(0, max(1, length - width), (1,), generator=self.gen))
            feats[start : start + width] = 0.0
        return feats

    def __call__(self, rows):
        lengths = [r["input_features"].shape[0] for r in rows]
        n_mels = rows[0]["input_features"].shape[1]
        feats = torch.zeros(len(rows), max(lengths), n_mels)
        mask = torch.zeros(len(rows), max(lengths), dtype=torch.long)
        for i, (row, length) in enumerate(zip(rows, lengths)):
            f = row["input_features"]
            feats[i, :length] = self._mask(f, length) if self.augment else f
            mask[i, :length] = 1
        label_len = max(len(r["labels"]) for r in rows)
        labels = torch.full((len(rows), label_len), -100, dtype=torch.long)
        for i, row in enumerate(rows):
            labels[i, : len(row["labels"])] = torch.tensor(row["labels"])
        return {"input_features": feats, "attention_mask": mask, "labels": labels}


def featurize(extractor, audios, texts, tokenizer):
    labels = tokenizer(texts).input_ids
    return [{"input_features": torch.from_numpy(extractor.extract(a)), "labels": l} for a, l in zip(audios, labels)]


def read_pcm(path: str):
    """A pocketsphinx test clip as float32 16 kHz: ``.wav`` through ``wave``, ``.raw`` as 16-bit little-endian 16 kHz."""
    if path.endswith(".wav"):
        with wave.open(path, "rb") as w:
            rate = w.getframerate()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    else:
        rate, data = 16000, np.fromfile(path, dtype="<i2")
    return data.astype(np.float32) / 32768.0, rate


def pocketsphinx_clips():
    """``[(name, path, reference or None, in_vocabulary)]`` for the clips present on this machine."""
    clips = []
    cards = os.path.join(POCKETSPHINX, "cards")
    trans = os.path.join(cards, "cards.transcription")
    if os.path.exists(trans):
        for line in open(trans):
            line = line.strip()
            if not line:
                continue
            text = line.split("(")[0].replace("<s>", "").replace("</s>", "").strip()
            uid = line.rsplit("(", 1)[1].rstrip(")")
            clips.append((f"cards/{uid}", os.path.join(cards, f"{uid}.wav"), text, True))
    tidigit = os.path.join(POCKETSPHINX, "tidigits", "dhd.2934z.raw")
    if os.path.exists(tidigit):  # TIDIGITS speaker "dhd", digits 2 9 3 4 z(ero)
        clips.append(("tidigits/dhd.2934z", tidigit, "two nine three four zero", True))
    libri = os.path.join(POCKETSPHINX, "librivox")
    if os.path.exists(os.path.join(libri, "transcription")):
        for line in open(os.path.join(libri, "transcription")):
            if line.strip():
                text = line.split("(")[0].replace("<s>", "").replace("</s>", "").strip()
                uid = line.rsplit("(", 1)[1].strip().rstrip(")")
                clips.append((f"librivox/{uid}", os.path.join(libri, f"{uid}.wav"), text, False))
    for name in ("goforward", "numbers", "something"):
        path = os.path.join(POCKETSPHINX, f"{name}.raw")
        if os.path.exists(path):
            clips.append((name, path, None, False))
    return [c for c in clips if os.path.exists(c[1])]


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def transcribe(model, processor, audios, batch_size: int = 64, max_new_tokens: int = 16):
    """Greedy ``generate()`` (KV cache) over 16 kHz waveforms, in batches; returns the texts."""
    model.eval()
    order = np.argsort([len(a) for a in audios])  # similar lengths together: less padding
    out = [None] * len(audios)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = processor(audio=[audios[i] for i in idx], sampling_rate=16000, return_tensors="pt")
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, use_cache=True)
        for i, text in zip(idx, processor.batch_decode(ids, skip_special_tokens=True)):
            out[i] = " ".join(text.split())
    return out


def evaluate_split(model, processor, audios, refs, voices):
    hyps = transcribe(model, processor, audios)
    details = wer_details(refs, hyps)
    details["examples"] = [{"voice": v, "reference": r, "hypothesis": h} for v, r, h in list(zip(voices, refs, hyps))[:12]]
    return details


# --------------------------------------------------------------------------- training


def length_batches(lengths, batch_size: int, gen: torch.Generator):
    """Batches of similar length (less padding): shuffle, sort within chunks of 50 batches, shuffle the batches."""
    order = torch.randperm(len(lengths), generator=gen).tolist()
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


def train(model, rows, cfg: dict, spec_augment, processor, validation):
    """AdamW, linear warm-up then cosine decay, gradient clipping, length-bucketed batches, SpecAugment.

    Every ``eval_steps`` steps: greedy WER on the first ``eval_utterances`` validation utterances (training voices).
    Returns ``(logged losses, [{"step", "loss", "validation_wer"}])``.
    """
    from transformers import get_cosine_schedule_with_warmup

    seed = cfg.get("seed", 0)
    gen = torch.Generator().manual_seed(seed)
    collate = SpeechCollator(spec_augment, seed=seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.get("weight_decay", 0.01)}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.get("learning_rate", 1e-3), betas=(0.9, 0.98),
    )
    steps = cfg["max_steps"]
    schedule = get_cosine_schedule_with_warmup(optimizer, cfg.get("warmup_steps", 200), steps)
    lengths = [r["input_features"].shape[0] for r in rows]
    batch_size = cfg.get("per_device_train_batch_size", 32)
    log_every, eval_every = cfg.get("logging_steps", 100), cfg.get("eval_steps", 500)
    n_eval = cfg.get("eval_utterances", 100)
    batches, losses, progress, running = [], [], [], []
    t0 = time.time()
    model.train()
    for step in range(1, steps + 1):
        if not batches:
            batches = length_batches(lengths, batch_size, gen)
        batch = collate([rows[i] for i in batches.pop()])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.get("max_grad_norm", 1.0))
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        running.append(float(loss.detach()))
        if step % log_every == 0 or step == steps:
            losses.append(sum(running) / len(running))
            running = []
            print(f"step {step}/{steps} loss {losses[-1]:.4f} lr {schedule.get_last_lr()[0]:.2e} ({time.time() - t0:.0f} s)", flush=True)
        if step % eval_every == 0 or step == steps:
            audios, refs = validation[0][:n_eval], validation[1][:n_eval]
            wer = wer_details(refs, transcribe(model, processor, audios))["wer"]
            progress.append({"step": step, "loss": losses[-1], "validation_wer": round(wer, 4), "seconds": round(time.time() - t0, 1)})
            print(f"step {step}: validation WER ({len(refs)} utterances) {wer:.4f}", flush=True)
            model.train()
    model.eval()
    return losses, progress


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipe", help="JSON recipe, e.g. configs/speech_espeak.json")
    p.add_argument("--output", help="output folder (default: the recipe's output_dir)")
    p.add_argument("--data-dir", help="folder written by prepare_speech_data.py (default: the recipe's data_dir)")
    p.add_argument("--max-steps", type=int, help="override training.max_steps")
    p.add_argument("--limit", type=int, help="use only the first N utterances of every split (smoke runs)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: the recipe's threads)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output folder written by an earlier run (never a folder of other files)")
    p.add_argument("--eval-only", metavar="MODEL_DIR", help="no training: evaluate a saved model + processor on the splits")
    return p.parse_args(argv)


def evaluate_only(model_dir: str, data_dir: str, limit=None) -> dict:
    """WER of a saved model (and its processor) on the validation and held-out-voice splits."""
    from transformers import AutoModelForSpeechSeq2Seq, AutoProcessor

    from prepare_speech_data import load_split

    model = AutoModelForSpeechSeq2Seq.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    results = {}
    for name, key in (("validation", "validation"), ("test", "test_held_out_voice")):
        audios, refs, voices = load_split(name, data_dir)
        if limit:
            audios, refs, voices = audios[:limit], refs[:limit], voices[:limit]
        details = evaluate_split(model, processor, audios, refs, voices)
        results[key] = {k: v for k, v in details.items() if k != "examples"}
        print(f"{key}: WER {details['wer']:.4f} ({details['words']} words)", flush=True)
    return results


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    with open(args.recipe) as f:
        recipe = json.load(f)
    if args.eval_only:
        torch.set_num_threads(args.threads or recipe.get("threads", 1))
        data_dir = args.data_dir or os.path.join(ROOT, recipe.get("data_dir", "data/cache/speech"))
        return evaluate_only(args.eval_only, data_dir, args.limit)
    output = os.path.abspath(args.output or os.path.join(ROOT, recipe["output_dir"]))
    data_dir = args.data_dir or os.path.join(ROOT, recipe.get("data_dir", "data/cache/speech"))
    protect = [args.recipe, data_dir]
    try:
        check_output_dir(output, args.overwrite, protect)
    except OutputExistsError as exc:
        print(f"train_speech: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    torch.set_num_threads(args.threads or recipe.get("threads", 1))
    train_cfg = dict(recipe["training"])
    if args.max_steps is not None:
        train_cfg["max_steps"] = args.max_steps
    seed = train_cfg.get("seed", 0)
    torch.manual_seed(seed)

    from prepare_speech_data import VOCABULARY, load_split

    splits = {name: load_split(name, data_dir) for name in ("train", "validation", "test")}
    if args.limit:
        splits = {k: tuple(part[: args.limit] for part in v) for k, v in splits.items()}
    extractor = LNormSpeechFeatureExtractor(**recipe.get("feature_extractor", {}))
    tokenizer = build_word_tokenizer(VOCABULARY)
    processor = LNormSpeechProcessor(extractor, tokenizer)
    t0 = time.time()
    train_rows = featurize(extractor, splits["train"][0], splits["train"][1], tokenizer)
    print(f"features: {len(train_rows)} training utterances in {time.time() - t0:.1f} s", flush=True)

    config = LNormSpeechConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=extractor.feature_size,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **recipe["model"],
    )
    model = LNormSpeechForConditionalGeneration(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters", flush=True)

    with staged_output_dir(output, args.overwrite, protect, writer="scripts/train_speech.py") as staged_dir:
        t_train = time.time()
        cpu_train = time.process_time()
        losses, progress = train(model, train_rows, train_cfg, recipe.get("spec_augment"), processor, splits["validation"])
        train_seconds = time.time() - t_train
        cpu_train = time.process_time() - cpu_train

        model.eval()
        t_eval = time.time()
        results = {
            "vocabulary": VOCABULARY,
            "parameters": n_params,
            "max_steps": train_cfg["max_steps"],
            "train_utterances": len(train_rows),
            "train_seconds": round(train_seconds, 1),
            "train_cpu_seconds": round(cpu_train, 1),
            "final_logged_loss": losses[-1] if losses else None,
            "progress": progress,
            "validation": evaluate_split(model, processor, *splits["validation"]),
            "test_held_out_voice": evaluate_split(model, processor, *splits["test"]),
        }
        print(f"validation WER {results['validation']['wer']:.4f}, held-out voice WER {results['test_held_out_voice']['wer']:.4f}", flush=True)
        clips = pocketsphinx_clips()
        if clips:
            audios = []
            for _, path, _, _ in clips:
                audio, rate = read_pcm(path)
                if rate != 16000:
                    raise SystemExit(f"train_speech: {path} is {rate} Hz, expected 16000")
                audios.append(audio)
            hyps = transcribe(model, processor, audios, max_new_tokens=24)
            rows = [{"clip": n, "reference": r, "in_vocabulary": iv, "hypothesis": h} for (n, _, r, iv), h in zip(clips, hyps)]
            in_vocab = [r for r in rows if r["in_vocabulary"]]
            results["pocketsphinx"] = {
                "clips": rows,
                "in_vocabulary_wer": wer_details([r["reference"] for r in in_vocab], [r["hypothesis"] for r in in_vocab]) if in_vocab else None,
            }
        results["eval_seconds"] = round(time.time() - t_eval, 1)
        results["wall_seconds"] = round(time.time() - started, 1)
        results["threads"] = torch.get_num_threads()
        results["provenance"] = provenance()

        staged = str(staged_dir)
        model.save_pretrained(
            staged,
            training_data=(
                "Synthetic speech: espeak-ng, 7 English voices x 23 variants, random speed/pitch; closed vocabulary of "
                f"{len(VOCABULARY)} words (playing cards, digit strings); scripts/prepare_speech_data.py."
            ),
        )
        processor.save_pretrained(staged)
        with open(os.path.join(staged, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps({k: v for k, v in results.items() if k not in ("validation", "test_held_out_voice", "pocketsphinx", "vocabulary", "provenance")}))
    print(f"wrote {output} ({time.time() - started:.0f} s)")
    return results


if __name__ == "__main__":
    main()
