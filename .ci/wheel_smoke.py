"""Smoke test of the installed wheel, run with the python of a fresh virtual environment that holds it.

    VENV/bin/python .ci/wheel_smoke.py

Everything runs from an empty temporary directory with a temporary HOME, so the
checks see what a new user sees:
1. `hf-lnorm optimize --quick` on the bundled default: exit 0, the span head is
   the trained one (the merged model's span head is the shipped adapter's), and nothing is written outside the output folder and the
   user's cache directory; site-packages is left unchanged.
2. `hf-lnorm patch` on the bundled default: outputs match.
3. `hf-lnorm export` of the merged QA model to ONNX: exit 0, graph written.
4. A family saved by the installed package loads as remote code in a process
   where hf_lnorm cannot be imported, with equal outputs.
Prints one line per check and exits 1 on the first failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent
CHECKOUT = Path(__file__).resolve().parents[1]


def fail(message: str) -> None:
    print(f"wheel smoke: FAIL: {message}", flush=True)
    sys.exit(1)


def ok(message: str) -> None:
    print(f"wheel smoke: ok: {message}", flush=True)


def run(cmd, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
        fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}")
    return proc


def files_under(root: Path) -> set:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def site_snapshot() -> dict:
    site = Path(sysconfig.get_paths()["purelib"])
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in files_under(site) if p.suffix != ".pyc"}


def main() -> None:
    import hf_lnorm

    if CHECKOUT in Path(hf_lnorm.__file__).resolve().parents:
        fail(f"hf_lnorm is imported from the checkout ({hf_lnorm.__file__}), not from the installed wheel")
    ok(f"hf_lnorm {hf_lnorm.__version__} imported from {Path(hf_lnorm.__file__).parent}")

    tmp = Path(tempfile.mkdtemp(prefix="hf-lnorm-wheel-smoke-"))
    home, work = tmp / "home", tmp / "work"
    home.mkdir()
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_CACHE_HOME", "HF_HOME", "HF_LNORM_CACHE", "TORCH_EXTENSIONS_DIR", "PYTHONPATH")}
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg",
               PATH=str(BIN) + os.pathsep + env.get("PATH", ""))
    cache = home / ".cache"
    hf_lnorm_cache = cache / "huggingface" / "hf_lnorm"
    cli = str(BIN / "hf-lnorm")

    before = site_snapshot()
    run([cli, "optimize", "--quick", "--output", "out"], cwd=work, env=env)
    report = json.loads((work / "out" / "report.json").read_text())
    source = Path(report["source"])
    if hf_lnorm_cache / "merged" not in source.parents:
        fail(f"the default QA model was {source}, not the bundled adapter merged under {hf_lnorm_cache / 'merged'}")
    from safetensors import safe_open

    from hf_lnorm.resources import QA_ADAPTER, data_file

    with safe_open(str(data_file(*QA_ADAPTER) / "adapter_model.safetensors"), "pt") as f:
        trained = f.get_tensor("base_model.model.qa_outputs.weight")
    with safe_open(str(source / "model.safetensors"), "pt") as f:
        used = f.get_tensor("qa_outputs.weight")
    if not bool((used == trained).all()):
        fail(f"the span head of {source} is not the trained one shipped with the package")
    f1 = {r["seq"]: r["f1"] for r in report["rows"] if r["variant"] == "pytorch-fp32"}
    ok(f"optimize --quick: model {report['model']!r} from {source.name}, trained span head; fp32 F1 by seq {f1}")

    stray = sorted(str(p) for p in files_under(work) if work / "out" not in p.parents)
    if stray:
        fail(f"optimize wrote outside its output folder: {stray[:5]}")
    stray = sorted(str(p) for p in files_under(home) if cache not in p.parents)
    if stray:
        fail(f"optimize wrote into HOME outside the cache directory: {stray[:5]}")
    after = site_snapshot()
    changed = sorted(str(p) for p in set(before) | set(after) if before.get(p) != after.get(p))
    if changed:
        fail(f"site-packages changed: {changed[:5]}")
    ok("nothing written outside the output folder and the cache directory; site-packages unchanged")

    proc = run([cli, "patch"], cwd=work, env=env)
    if "outputs match" not in proc.stdout:
        fail("hf-lnorm patch on the bundled default: outputs differ\n" + proc.stdout[-2000:])
    ok("patch: " + proc.stdout.strip().splitlines()[-1])

    proc = run([cli, "export", str(source), "exported", "--task", "question-answering"], cwd=work, env=env)
    if not (work / "exported" / "model.onnx").is_file():
        fail("export wrote no model.onnx")
    ok("export: " + " | ".join(line for line in proc.stdout.splitlines() if line.startswith(("export path", "ONNX Runtime"))))

    saved = tmp / "gpt"
    code_save = f"""
import torch
from hf_lnorm.models import LNormGPTConfig, LNormGPTForCausalLM
torch.manual_seed(0)
model = LNormGPTForCausalLM(LNormGPTConfig(vocab_size=64, max_position_embeddings=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, dropout=0.0)).eval()
model.save_pretrained({str(saved)!r})
ids = torch.randint(0, 64, (2, 8))
with torch.no_grad():
    torch.save({{"ids": ids, "logits": model(ids).logits}}, {str(saved / "expected.pt")!r})
"""
    run([sys.executable, "-c", code_save], cwd=work, env=env)
    code_load = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_lnorm" or name.startswith("hf_lnorm."):
            raise ImportError("hf_lnorm is blocked in this process")
sys.meta_path.insert(0, Block())
import torch
from transformers import AutoModelForCausalLM
data = torch.load({str(saved / "expected.pt")!r})
model = AutoModelForCausalLM.from_pretrained({str(saved)!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    torch.testing.assert_close(model(data["ids"]).logits, data["logits"], atol=1e-5, rtol=1e-5)
assert "hf_lnorm" not in sys.modules
print("REMOTE-CODE-OK")
"""
    proc = run([sys.executable, "-c", code_load], cwd=work, env=env)
    if "REMOTE-CODE-OK" not in proc.stdout:
        fail("remote-code load printed no confirmation")
    ok("LNormGPT saved by the wheel loads as remote code without hf_lnorm, same logits")


if __name__ == "__main__":
    main()
