"""Build an offline SQuAD v1.1-format extractive-QA set from Shakespeare's plays.

No SQuAD-format data exists offline (see ``shared/DATA.md``), so this script
makes one from the public-domain Gutenberg texts that
``scripts/prepare_data.py shakespeare`` writes::

    python scripts/prepare_data.py shakespeare          # -> data/cache/shakespeare.txt
    python scripts/make_qa_data.py                       # -> data/qa/train.json, hf_lnorm/data/qa/dev.json
    python scripts/make_qa_data.py --input hf_lnorm/data/shakespeare_sample.txt \\
        --output_dir hf_lnorm/data/qa --prefix sample_ --train_contexts 120 --dev_contexts 40

Method
------
1. The concatenated text is split into plays (each starts with its title line
   followed by ``by William Shakespeare``), plays into blank-line separated
   blocks, and blocks into speeches: a block whose first line is a short speaker
   tag (``Hor.``, ``HAMLET``, ``First Lord.``) followed by the spoken lines.
   Stage directions in square brackets are dropped; a scene heading ends the
   running dialogue so no context crosses a scene boundary.
2. Runs of consecutive speeches of 40-100 words become contexts, written as
   one line per speech: ``<tag>: <speech>``.
3. Two question templates per context, both answered by exact spans:
   * ``Who says "<quote>"?``: the quote is 4-8 consecutive words of one speech
     that occur exactly once in the context; the answer is that speech's tag.
   * ``What does <B> reply when <A> says "<quote>"?``: the answer is the first
     sentence (at most 20 words) of the speech that follows A's.
4. Every answer is checked: ``context[answer_start:][:len(text)] == text``; the
   script stops with an error if any check fails.
5. Split by play: the held-out plays (``--dev_plays``) only appear in the dev
   file, so a model cannot memorise their speaker names or lines.

Limits
------
Questions are templates, not human-written; a quote is a verbatim substring of
the context, so the task is locating a quotation and reading the structure
around it (the speaker tag before it, the next speech after it), not
paraphrase understanding. Scores on this set are not comparable to SQuAD.
One-word speeches ("He.", "Ay.") are left out of contexts, so a context is a
slightly condensed excerpt, and "reply" means the next speech shown in the
context. Speaker tags are the Gutenberg abbreviations (``Hor``), and a few speeches
whose tag looks like ordinary text (songs, letters) may be misparsed; such
blocks are skipped rather than guessed. Output is deterministic for a given
input and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_INPUT = os.path.join(ROOT, "data", "cache", "shakespeare.txt")
DEFAULT_DEV_PLAYS = ("HAMLET, PRINCE OF DENMARK", "MACBETH", "TWELFTH NIGHT; OR, WHAT YOU WILL", "THE TEMPEST")

_TAG = re.compile(r"^([A-Z][A-Za-z'\-]*(?: (?:of |de |and )?[A-Z][A-Za-z'\-]*){0,3})\.?\s*$")
_SCENE = re.compile(r"^\s*(ACT|SCENE|Scene|Act)\b")
_NOT_TAGS = {"ACT", "SCENE", "Scene", "Act", "Exit", "Exeunt", "Enter", "FINIS", "THE END", "Epilogue", "Prologue"}


@dataclass
class Speech:
    """One speech: the speaker tag (without its trailing period) and the spoken text."""

    tag: str
    text: str


def split_plays(text: str) -> List[Tuple[str, str]]:
    """Split the concatenated corpus into ``(title, body)`` pairs.

    Args:
        text: the contents of ``shakespeare.txt`` (plays joined by blank lines).

    Returns:
        One pair per play, in file order; the title is the line before ``by William Shakespeare``.
    """
    lines = text.splitlines()
    bylines = [i for i, line in enumerate(lines) if line.strip() == "by William Shakespeare"]
    titles = []
    for i in bylines:
        t = i - 1
        while t > 0 and not lines[t].strip():
            t -= 1
        titles.append(t)
    plays = []
    for k, i in enumerate(bylines):
        end = titles[k + 1] if k + 1 < len(bylines) else len(lines)
        plays.append((lines[titles[k]].strip(), "\n".join(lines[i + 1 : end])))
    return plays


def _clean(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip()


def parse_scenes(body: str) -> List[List[Speech]]:
    """Parse a play body into scenes, each a list of speeches.

    Args:
        body: the text of one play after its title.

    Returns:
        Lists of consecutive speeches; a scene/act heading or an unparsable block
        starts a new list, so contexts never join speeches that were not adjacent.
    """
    scenes: List[List[Speech]] = [[]]
    for block in re.split(r"\n\s*\n", body):
        lines = [ln.rstrip() for ln in block.strip("\n").split("\n") if ln.strip()]
        if not lines:
            continue
        if _SCENE.match(lines[0]):
            scenes.append([])
            continue
        m = _TAG.match(lines[0].strip())
        spoken = [ln for ln in lines[1:] if not ln.strip().startswith("[") and not ln.strip().endswith("]")]
        if m is None or m.group(1) in _NOT_TAGS or not spoken or len(lines[0].strip()) > 30:
            if not lines[0].strip().startswith("["):
                scenes.append([])  # unknown block: break the dialogue here
            continue
        text = _clean(" ".join(spoken))
        # Drop inline stage directions like "[Aside.]" that sit inside speech lines.
        text = _clean(re.sub(r"\[[^\]]*\]", " ", text))
        if len(text.split()) < 2:
            continue
        scenes[-1].append(Speech(m.group(1), text))
    return [s for s in scenes if len(s) >= 3]


def windows(scene: Sequence[Speech], min_words: int, max_words: int) -> Iterator[List[Speech]]:
    """Yield non-overlapping runs of at least three speeches with min..max words in total."""
    i = 0
    while i < len(scene):
        run: List[Speech] = []
        words = 0
        j = i
        while j < len(scene) and words + len(scene[j].text.split()) <= max_words:
            run.append(scene[j])
            words += len(scene[j].text.split())
            j += 1
        if len(run) >= 3 and words >= min_words:
            yield run
            i = j
        else:
            i += 1


def _first_sentence(text: str, max_words: int = 20) -> str:
    m = re.match(r"^(.+?[.!?;:])(?:\s|$)", text)
    sent = m.group(1) if m else text
    words = sent.split()
    if len(words) > max_words:
        sent = " ".join(words[:max_words])
    return sent.rstrip(",;:-'")


def build_context(run: Sequence[Speech]) -> Tuple[str, List[int], List[int]]:
    """Render speeches as ``tag: text`` lines.

    Returns:
        ``(context, tag_starts, text_starts)``: the character offset of every tag and every speech text.
    """
    parts, tag_starts, text_starts, pos = [], [], [], 0
    for sp in run:
        tag_starts.append(pos)
        line = f"{sp.tag}: {sp.text}"
        text_starts.append(pos + len(sp.tag) + 2)
        parts.append(line)
        pos += len(line) + 1
    return "\n".join(parts), tag_starts, text_starts


def _pick_quote(rng: random.Random, text: str, context: str) -> Optional[str]:
    words = text.split()
    if len(words) < 4:
        return None
    for _ in range(8):
        n = rng.randint(4, min(8, len(words)))
        s = rng.randint(0, len(words) - n)
        quote = " ".join(words[s : s + n]).strip(",;:-")
        if len(quote.split()) >= 4 and context.count(quote) == 1:
            return quote
    return None


def make_questions(rng: random.Random, run: Sequence[Speech], cid: str) -> Optional[dict]:
    """Build one SQuAD paragraph (context + up to two questions) from a run of speeches."""
    context, tag_starts, text_starts = build_context(run)
    qas = []
    # "Who says ...?"
    order = list(range(len(run)))
    rng.shuffle(order)
    for k in order:
        quote = _pick_quote(rng, run[k].text, context)
        if quote:
            qas.append({"id": f"{cid}-who", "question": f'Who says "{quote}"?',
                        "answers": [{"text": run[k].tag, "answer_start": tag_starts[k]}]})
            break
    # "What does B reply when A says ...?"
    order = [k for k in range(len(run) - 1) if run[k].tag != run[k + 1].tag]
    rng.shuffle(order)
    for k in order:
        quote = _pick_quote(rng, run[k].text, context)
        answer = _first_sentence(run[k + 1].text)
        if quote and len(answer.split()) >= 2:
            qas.append({"id": f"{cid}-reply", "question": f'What does {run[k + 1].tag} reply when {run[k].tag} says "{quote}"?',
                        "answers": [{"text": answer, "answer_start": text_starts[k + 1]}]})
            break
    for qa in qas:
        a = qa["answers"][0]
        if context[a["answer_start"] : a["answer_start"] + len(a["text"])] != a["text"]:
            raise AssertionError(f"answer {a['text']!r} is not the span at {a['answer_start']} of context {cid}")
    if not qas:
        return None
    return {"context": context, "qas": qas}


def build_split(plays: Sequence[Tuple[str, str]], n_contexts: int, rng: random.Random, min_words: int, max_words: int) -> dict:
    """Sample ``n_contexts`` paragraphs (all if fewer) from the given plays, as a SQuAD v1.1 dict."""
    candidates = []
    for title, body in plays:
        for si, scene in enumerate(parse_scenes(body)):
            for wi, run in enumerate(windows(scene, min_words, max_words)):
                candidates.append((title, f"{re.sub(r'[^a-z]+', '_', title.lower()).strip('_')[:40]}-{si}-{wi}", run))
    rng.shuffle(candidates)
    by_title: Dict[str, List[dict]] = {}
    count = 0
    for title, cid, run in candidates:
        if count >= n_contexts:
            break
        para = make_questions(rng, run, cid)
        if para is not None:
            by_title.setdefault(title, []).append(para)
            count += 1
    return {"version": "1.1", "data": [{"title": t, "paragraphs": p} for t, p in sorted(by_title.items())]}


def _write_json(path: str, obj: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
    os.replace(tmp, path)


def _stats(d: dict) -> Tuple[int, int]:
    paras = [p for a in d["data"] for p in a["paragraphs"]]
    return len(paras), sum(len(p["qas"]) for p in paras)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Build a SQuAD-format QA set from Shakespeare's plays (see module docstring).")
    p.add_argument("--input", default=DEFAULT_INPUT, help="concatenated plays (scripts/prepare_data.py shakespeare)")
    p.add_argument("--output_dir", default=os.path.join(ROOT, "data", "qa"))
    p.add_argument("--prefix", default="", help="file name prefix, e.g. 'sample_'")
    p.add_argument("--train_contexts", type=int, default=1750)
    p.add_argument("--dev_contexts", type=int, default=300)
    p.add_argument("--dev_plays", default="|".join(DEFAULT_DEV_PLAYS), help="'|'-separated play titles held out for dev")
    p.add_argument("--min_words", type=int, default=40)
    p.add_argument("--max_words", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not os.path.isfile(args.input):
        raise SystemExit(f"make_qa_data: input {args.input} not found; build it with: python scripts/prepare_data.py shakespeare")
    with open(args.input, encoding="utf-8") as f:
        plays = split_plays(f.read())
    if not plays:
        raise SystemExit(f"make_qa_data: no plays found in {args.input} (expected title lines followed by 'by William Shakespeare')")
    dev_titles = set(args.dev_plays.split("|"))
    missing = dev_titles - {t for t, _ in plays}
    if missing:
        raise SystemExit(f"make_qa_data: dev plays {sorted(missing)} not in {args.input}; titles found: {[t for t, _ in plays]}")
    rng = random.Random(args.seed)
    train = build_split([pl for pl in plays if pl[0] not in dev_titles], args.train_contexts, rng, args.min_words, args.max_words)
    dev = build_split([pl for pl in plays if pl[0] in dev_titles], args.dev_contexts, rng, args.min_words, args.max_words)
    for name, d in (("train", train), ("dev", dev)):
        path = os.path.join(args.output_dir, f"{args.prefix}{name}.json")
        _write_json(path, d)
        n_ctx, n_q = _stats(d)
        print(f"{name}: {n_ctx} contexts, {n_q} questions from {len(d['data'])} plays -> {path} ({os.path.getsize(path) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
