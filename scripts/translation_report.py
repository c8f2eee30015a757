#!/usr/bin/env python
"""Collect one translation-recipe run into a result JSON and a learning-curve plot.

The docs page of the translation default (``docs/results/translation.md``) is
rendered from that JSON by ``scripts/render_results.py``::

    python scripts/prepare_data.py bible
    python scripts/run_translation.py configs/translation_lnorm_seq2seq.json --output_dir runs/translation-default
    python scripts/translation_report.py runs/translation-default --config configs/translation_lnorm_seq2seq.json \\
        --json data/results/translation_lnorm_seq2seq_cpu.json --png docs/results/img/translation_curve.png

It reads what the recipe wrote into its output folder: ``trainer_state.json``
(the logged training loss and every held-out evaluation), ``all_results.json``
(the final scores, the copy-the-source baseline, the training wall time),
``provenance.json`` (commit, versions, machine and command of the run) and
``eval_translations.jsonl`` (every held-out source, reference and prediction).

``--evaluation STEP=DIR`` (repeatable) takes the held-out scores at ``STEP``
from an evaluation-only run of the recipe instead (``--do_train false
--model_name_or_path RUN/checkpoint-STEP``, output folder ``DIR``); the one at
the run's last step also gives the final scores, the translations and the
samples.
The JSON keeps the learning curve, the final scores, one sample translation per
held-out book, and how often the prediction keeps a capitalised word (a name
such as *Moab*) that the source and the reference share. Outputs are written
under a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from hf_lnorm._json import staged_file, write_json

NEEDED = ("trainer_state.json", "all_results.json", "provenance.json", "eval_translations.jsonl")
# A capitalised word that is not the first word of its sentence: in this corpus nearly always a name.
_NAME = re.compile(r"(?<![.;:?!¿¡]\s)(?<!^)\b([A-Z][a-z]{2,})\b")


def _read_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_lines(path: Path) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def curve(log_history: Sequence[dict]) -> Dict[str, List[dict]]:
    """Split the trainer's log into training points and held-out evaluations, by step."""
    train = [{"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate")}
             for h in log_history if "loss" in h]
    evals = [{"step": h["step"], "loss": h.get("eval_loss"), "bleu": h.get("eval_bleu"), "chrf": h.get("eval_chrf"),
              "seconds": h.get("eval_runtime")} for h in log_history if "eval_bleu" in h]
    return {"train": train, "eval": evals}


def shared_names(rows: Sequence[dict]) -> Dict[str, object]:
    """How many capitalised words shared by source and reference (names) the predictions keep."""
    shared = kept = 0
    examples: Dict[str, int] = {}
    for r in rows:
        names = set(_NAME.findall(r["source"])) & set(_NAME.findall(r["reference"]))
        shared += len(names)
        for n in names:
            if re.search(rf"\b{re.escape(n)}\b", r["prediction"]):
                kept += 1
                examples[n] = examples.get(n, 0) + 1
    top = sorted(examples.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    return {"shared": shared, "kept": kept, "share_kept": round(kept / shared, 4) if shared else None,
            "most_kept": [n for n, _ in top]}


def samples(rows: Sequence[dict], corpus: Optional[Path], source_lang: str) -> List[dict]:
    """One sample per held-out book (its first verse) when the corpus is there to name the books, else every 40th row."""
    ids: Dict[str, str] = {}
    if corpus is not None and corpus.is_file():
        for row in _read_lines(corpus):
            ids.setdefault(row.get(source_lang, ""), row.get("id", ""))
    picked, seen = [], set()
    for i, r in enumerate(rows):
        verse = ids.get(r["source"])
        book = verse.split(".")[0] if verse else None
        if (book is not None and book not in seen) or (not ids and i % 40 == 0):
            seen.add(book)
            picked.append({"id": verse, **{k: r[k] for k in ("source", "reference", "prediction")}})
    return picked


def _evaluation(step: int, folder: Path) -> dict:
    missing = [n for n in NEEDED[1:] if not (folder / n).is_file()]
    if missing:
        raise SystemExit(f"translation_report: error: --evaluation {step}={folder} lacks {', '.join(missing)}; it must "
                         "be the output folder of a finished evaluation-only scripts/run_translation.py run")
    scores = _read_json(folder / "all_results.json")
    return {"step": step, "loss": scores.get("eval_loss"), "bleu": scores["eval_bleu"], "chrf": scores["eval_chrf"],
            "seconds": scores.get("eval_wall_s"), "from": "evaluation-only run",
            "command": _read_json(folder / "provenance.json").get("command")}


def collect(run_dir: Path, config: dict, evaluations: Optional[Dict[int, Path]] = None) -> dict:
    """The result JSON of the recipe run in ``run_dir`` made with ``config`` (``evaluations``: step -> the output
    folder of an evaluation-only run at that step)."""
    missing = [n for n in NEEDED if not (run_dir / n).is_file()]
    if missing:
        raise SystemExit(f"translation_report: error: {run_dir} lacks {', '.join(missing)}; it must be the output "
                         "folder of a finished scripts/run_translation.py run with do_train and do_eval")
    state = _read_json(run_dir / "trainer_state.json")
    final = _read_json(run_dir / "all_results.json")
    evaluations = dict(evaluations or {})
    last = state.get("global_step") or max((h.get("step", 0) for h in state.get("log_history", [])), default=0)
    unknown = sorted(s for s in evaluations if s > last)
    if unknown:
        raise SystemExit(f"translation_report: error: --evaluation steps {unknown} lie beyond the run's last step {last}")
    final_dir = evaluations.get(last, run_dir)
    if final_dir != run_dir:  # the final scores from the evaluation-only run at the last step
        final = {**final, **{k: v for k, v in _read_json(final_dir / "all_results.json").items() if k.startswith("eval_")}}
    rows = _read_lines(final_dir / "eval_translations.jsonl")
    corpus = Path(config["train_file"]) if config.get("train_file") else None
    keys = ("eval_bleu", "eval_chrf", "eval_loss", "eval_copy_source_bleu", "eval_copy_source_chrf", "eval_samples",
            "eval_wall_s", "train_wall_s", "train_runtime", "train_samples", "epoch", "final_logged_loss")
    trained = curve(state.get("log_history", []))
    replaced = {step: _evaluation(step, folder) for step, folder in sorted(evaluations.items())}
    trained["eval"] = sorted([{**p, "from": "during training"} for p in trained["eval"] if p["step"] not in replaced]
                             + list(replaced.values()), key=lambda p: p["step"])
    return {
        "experiment": "translation",
        "description": "LNormSeq2Seq trained from scratch on KJV English -> Reina-Valera Spanish with the recipe's "
                       "default config, scored on the held-out books",
        "settings": config,
        "final": {k: final.get(k) for k in keys},
        "curve": trained,
        "names": shared_names(rows),
        "samples": samples(rows, corpus, config.get("source_lang", "en")),
        "provenance": _read_json(run_dir / "provenance.json"),
        "evaluation_provenance": _read_json(final_dir / "provenance.json") if final_dir != run_dir else None,
    }


def plot(result: dict, path: Path) -> None:
    """Training loss and held-out BLEU / chrF against steps, with the copy baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, f = result["curve"], result["final"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot([p["step"] for p in c["train"]], [p["loss"] for p in c["train"]], label="training loss (label-smoothed)")
    a.plot([p["step"] for p in c["eval"]], [p["loss"] for p in c["eval"]], "o-", label="held-out loss (label-smoothed)")
    a.set_xlabel("step")
    a.set_ylabel("cross-entropy (nats)")
    a.legend()
    steps = [p["step"] for p in c["eval"]]
    b.plot(steps, [p["bleu"] for p in c["eval"]], "o-", label="BLEU")
    b.plot(steps, [p["chrf"] for p in c["eval"]], "s-", label="chrF")
    b.axhline(f["eval_copy_source_bleu"], ls=":", color="C0", label="copy-the-source BLEU")
    b.axhline(f["eval_copy_source_chrf"], ls=":", color="C1", label="copy-the-source chrF")
    b.set_xlabel("step")
    b.set_ylabel("score on the held-out books")
    b.legend(fontsize=8)
    fig.tight_layout()
    with staged_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="output folder of a finished scripts/run_translation.py run")
    parser.add_argument("--config", required=True, help="the JSON config the run was started with")
    parser.add_argument("--json", required=True, help="result JSON to write")
    parser.add_argument("--png", default=None, help="learning-curve plot to write (needs matplotlib)")
    parser.add_argument("--evaluation", action="append", default=[], metavar="STEP=DIR",
                        help="held-out scores at STEP from the evaluation-only recipe run in DIR (repeatable)")
    args = parser.parse_args(argv)
    evaluations = {}
    for item in args.evaluation:
        step, sep, folder = item.partition("=")
        if not sep or not step.isdigit() or not folder:
            parser.error(f"--evaluation {item!r} is not STEP=DIR (for example 5000=runs/eval-5000)")
        if not Path(folder).is_dir():
            parser.error(f"--evaluation {item!r}: {folder!r} is not a folder")
        evaluations[int(step)] = Path(folder)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        parser.error(f"run_dir {args.run_dir!r} is not a folder")
    try:
        config = _read_json(Path(args.config))
    except (OSError, ValueError) as exc:
        parser.error(f"--config {args.config!r} is not a readable JSON file: {exc}")
    result = collect(run_dir, config, evaluations)
    write_json(args.json, result, indent=1)
    print(f"wrote {args.json}")
    if args.png:
        plot(result, Path(args.png))
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
