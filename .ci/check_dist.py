"""Check the built wheel and sdist: metadata, and every file a default needs is inside.

    python .ci/check_dist.py dist/
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

NEEDED = [
    "hf_lnorm/py.typed",
    "hf_lnorm/norms/cpu/add_norm.cpp",
    "hf_lnorm/data/qa/dev.json",
    "hf_lnorm/data/qa/sample_train.json",
    "hf_lnorm/data/qa-minilm-lora/adapter_config.json",
    "hf_lnorm/data/qa-minilm-lora/adapter_model.safetensors",
    "hf_lnorm/data/shakespeare_sample.txt",
    "hf_lnorm/data/bible_en_es_sample.jsonl",
    "hf_lnorm/models/layers.py",
]
EXTRAS = {"onnx", "optimum", "train", "triton", "kernels", "dev"}


def main(folder: str) -> int:
    dist = Path(folder)
    wheels, sdists = sorted(dist.glob("hf_lnorm-*.whl")), sorted(dist.glob("hf_lnorm-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(f"check_dist: expected one wheel and one sdist in {dist}, found {wheels + sdists}")
        return 1
    problems = []
    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(whl.read(meta_name).decode())
        if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
            problems.append("wheel: no LICENSE in .dist-info/licenses")
    problems += [f"wheel: missing {n}" for n in NEEDED if n not in names]
    problems += [f"wheel: unexpected top-level {n}" for n in names
                 if not n.startswith(("hf_lnorm/", "hf_lnorm-"))]
    with tarfile.open(sdists[0]) as sdist:
        root = sdist.getnames()[0].split("/")[0]
        snames = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    problems += [f"sdist: missing {n}" for n in NEEDED + ["LICENSE", "pyproject.toml", "README.md"] if n not in snames]
    version = meta["Version"]
    import importlib.util
    spec = importlib.util.spec_from_file_location("v", Path(__file__).resolve().parents[1] / "hf_lnorm" / "_version.py")
    v = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(v)
    if version != v.__version__:
        problems.append(f"metadata version {version} != hf_lnorm/_version.py {v.__version__}")
    if not root.endswith(version):
        problems.append(f"sdist folder {root} does not carry version {version}")
    if meta.get("License-Expression") != "Apache-2.0":
        problems.append(f"License-Expression is {meta.get('License-Expression')!r}")
    if not meta.get_all("Classifier"):
        problems.append("no classifiers")
    extras = set(meta.get_all("Provides-Extra") or [])
    if not EXTRAS <= extras:
        problems.append(f"extras {sorted(EXTRAS - extras)} missing")
    requires = meta.get_all("Requires-Dist") or []
    if any("+cpu" in r for r in requires):
        problems.append("a requirement pins a +cpu build")
    for p in problems:
        print("check_dist:", p)
    if not problems:
        print(f"check_dist: ok: {wheels[0].name} and {sdists[0].name} (version {version}, {len(names)} files in the wheel, "
              f"extras {', '.join(sorted(extras))})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "dist"))
