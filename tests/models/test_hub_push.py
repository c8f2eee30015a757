"""push_to_hub to a local Hub server (tests/hub_server.py), then from_pretrained(repo_id) in a fresh process; the
repository's README.md is replaced only when it is a card hf_lnorm generated."""

import torch

from hf_lnorm.models import LNormGPTForCausalLM
from hf_lnorm.models.remote_code import is_generated_card

from ..hub_server import HubServer, use_endpoint
from .conftest import BLOCK_HF_LNORM, load_script, run_python, tiny_gpt_config


def test_push_to_local_hub_and_load_back_in_a_fresh_process(tmp_path):
    train_tokenizer = load_script("train_tokenizer")
    tokenizer = train_tokenizer.train_bpe_tokenizer(["to be, or not to be: that is the question"] * 20, vocab_size=300)
    model = LNormGPTForCausalLM(tiny_gpt_config(vocab_size=len(tokenizer), norm_type="rmsnorm")).eval()
    ids = tokenizer("to be or not", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model(ids).logits
    torch.save({"ids": ids, "logits": expected}, tmp_path / "expected.pt")

    with HubServer() as server, use_endpoint(server.url):
        commit = model.push_to_hub("tester/tiny-lnorm-gpt", tokenizer=tokenizer, training_data="A repeated Hamlet line (test).")
        assert commit.oid == server.repos["tester/tiny-lnorm-gpt"].sha
        files = set(server.repos["tester/tiny-lnorm-gpt"].files)
        assert {"config.json", "model.safetensors", "modeling_lnorm_gpt.py", "configuration_lnorm_gpt.py", "layers.py",
                "remote_code.py", "README.md", "tokenizer.json", "tokenizer_config.json"} <= files
        card = server.repos["tester/tiny-lnorm-gpt"].files["README.md"].decode()
        for text in ("# tester/tiny-lnorm-gpt", "norm_type='rmsnorm'", "## Intended use", "A repeated Hamlet line (test).", "trust_remote_code=True"):
            assert text in card, text

        code = BLOCK_HF_LNORM + f"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
data = torch.load({str(tmp_path / "expected.pt")!r})
model = AutoModelForCausalLM.from_pretrained("tester/tiny-lnorm-gpt", trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained("tester/tiny-lnorm-gpt")
ids = tokenizer("to be or not", return_tensors="pt").input_ids
assert torch.equal(ids, data["ids"]), (ids, data["ids"])
with torch.no_grad():
    torch.testing.assert_close(model(ids).logits, data["logits"], atol=1e-5, rtol=1e-5)
print("HUB-LOAD-OK", type(model).__module__)
"""
        proc = run_python(
            code,
            env_extra={"HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home")},
        )
        assert "HUB-LOAD-OK transformers_modules" in proc.stdout, proc.stdout
        assert "model.safetensors" in server.downloads and "modeling_lnorm_gpt.py" in server.downloads


def test_push_refreshes_a_generated_card_and_keeps_a_user_card(monkeypatch):
    import huggingface_hub.file_download
    from huggingface_hub import HfApi

    model = LNormGPTForCausalLM(tiny_gpt_config()).eval()
    repo_id = "tester/card-lnorm-gpt"
    with HubServer() as server, use_endpoint(server.url):
        # huggingface_hub 0.x reads the download URL template from a copy taken at import; a fresh process would
        # take it from HF_ENDPOINT
        monkeypatch.setattr(huggingface_hub.file_download, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}", raising=False)
        model.push_to_hub(repo_id, training_data="First corpus.")
        repo = server.repos[repo_id]
        first = repo.files["README.md"].decode()
        assert "First corpus." in first and is_generated_card(first)

        model.push_to_hub(repo_id, training_data="Second corpus.")
        second = repo.files["README.md"].decode()
        assert "Second corpus." in second and "First corpus." not in second and "README.md" in repo.commits[-1]["files"]

        user_card = b"---\nlicense: mit\n---\n# Card written on the Hub\n\nKeep me.\n"
        HfApi().upload_file(path_or_fileobj=user_card, path_in_repo="README.md", repo_id=repo_id)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)  # new weights, so the next push is a real commit
        model.push_to_hub(repo_id, training_data="Third corpus.")
        assert repo.files["README.md"] == user_card
        assert "README.md" not in repo.commits[-1]["files"] and "model.safetensors" in repo.commits[-1]["files"]
