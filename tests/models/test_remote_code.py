"""Saved models load with trust_remote_code=True in a process where hf_lnorm cannot be imported, with equal outputs;
save_pretrained writes its model card only over a card it generated."""

import os

import torch

from hf_lnorm.models import LNormGPTForCausalLM, LNormGPTForSequenceClassification, LNormSeq2SeqForConditionalGeneration
from hf_lnorm.models.remote_code import CARD_MARKER, is_generated_card

from .conftest import BLOCK_HF_LNORM, run_python, tiny_gpt_config, tiny_seq2seq_config


def test_every_family_loads_as_remote_code_without_hf_lnorm(tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(3, 60, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    gpt = LNormGPTForCausalLM(tiny_gpt_config(norm_type="rmsnorm")).eval()
    cls = LNormGPTForSequenceClassification(tiny_gpt_config(norm_position="post")).eval()
    s2s = LNormSeq2SeqForConditionalGeneration(tiny_seq2seq_config(share_embeddings=False, decoder_vocab_size=40)).eval()
    gpt.save_pretrained(tmp_path / "gpt")
    cls.save_pretrained(tmp_path / "cls")
    s2s.save_pretrained(tmp_path / "s2s")
    with torch.no_grad():
        expected = {
            "gpt": gpt(ids).logits,
            "gpt_generate": gpt.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False),
            "cls": cls(ids, attention_mask=mask).logits,
            "s2s": s2s(ids, attention_mask=mask, decoder_input_ids=ids[:, :4] % 40).logits,
            "s2s_generate": s2s.generate(ids, attention_mask=mask, max_new_tokens=5, min_new_tokens=5, num_beams=2, do_sample=False),
        }
    torch.save({"ids": ids, "mask": mask, "expected": expected}, tmp_path / "expected.pt")

    code = BLOCK_HF_LNORM + f"""
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification
root = {str(tmp_path)!r}
data = torch.load(root + "/expected.pt")
ids, mask, expected = data["ids"], data["mask"], data["expected"]

def check(name, got):
    want = expected[name]
    if want.dtype.is_floating_point:
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    else:
        assert torch.equal(got, want), (name, got, want)

with torch.no_grad():
    gpt = AutoModelForCausalLM.from_pretrained(root + "/gpt", trust_remote_code=True).eval()
    assert type(gpt).__module__.startswith("transformers_modules"), type(gpt).__module__
    check("gpt", gpt(ids).logits)
    check("gpt_generate", gpt.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False))
    cls = AutoModelForSequenceClassification.from_pretrained(root + "/cls", trust_remote_code=True).eval()
    check("cls", cls(ids, attention_mask=mask).logits)
    # every Auto class of the family resolves from the saved auto_map, not only the saved head
    assert type(AutoModel.from_pretrained(root + "/cls", trust_remote_code=True)).__name__ == "LNormGPTModel"
    assert type(AutoModelForCausalLM.from_pretrained(root + "/cls", trust_remote_code=True)).__name__ == "LNormGPTForCausalLM"
    s2s = AutoModelForSeq2SeqLM.from_pretrained(root + "/s2s", trust_remote_code=True).eval()
    check("s2s", s2s(ids, attention_mask=mask, decoder_input_ids=ids[:, :4] % 40).logits)
    check("s2s_generate", s2s.generate(ids, attention_mask=mask, max_new_tokens=5, min_new_tokens=5, num_beams=2, do_sample=False))
    assert type(AutoModel.from_pretrained(root + "/s2s", trust_remote_code=True)).__name__ == "LNormSeq2SeqModel"
    assert AutoConfig.from_pretrained(root + "/s2s", trust_remote_code=True).model_type == "lnorm-seq2seq"
    # a model loaded as remote code saves as remote code again
    gpt.save_pretrained(root + "/gpt_again")
import os, sys
assert "hf_lnorm" not in sys.modules
assert os.path.exists(root + "/gpt_again/layers.py")
print("REMOTE-CODE-OK")
"""
    proc = run_python(code, env_extra={"HF_HOME": str(tmp_path / "hf_home")}, cwd=str(tmp_path))
    assert "REMOTE-CODE-OK" in proc.stdout


def test_import_works_without_pillow():
    """hf_lnorm's requirements do not include Pillow; without it transformers' AutoImageProcessor is a stub that
    raises ImportError, and `import hf_lnorm` must still register every model family."""
    proc = run_python("""
        import importlib.util, sys
        class _NoPillow:  # `import PIL` fails (transformers 5.x probes this way) ...
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "PIL":
                    raise ImportError("Pillow is hidden in this process")
        sys.meta_path.insert(0, _NoPillow())
        _find_spec = importlib.util.find_spec  # ... and find_spec says it is not installed (4.57 probes this way)
        importlib.util.find_spec = lambda name, *a, **k: None if name.split(".")[0] == "PIL" else _find_spec(name, *a, **k)
        from transformers.utils import is_vision_available
        assert not is_vision_available()
        import hf_lnorm
        from transformers import AutoConfig, AutoModel
        for model_type in ("lnorm-gpt", "lnorm-seq2seq", "lnorm-vit", "lnorm-speech", "lnorm-vision-text", "lnorm-policy"):
            assert type(AutoConfig.for_model(model_type)).__name__.startswith("LNorm"), model_type
        vit = AutoModel.from_config(AutoConfig.for_model("lnorm-vit", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                         intermediate_size=16, image_size=8, patch_size=4))
        print(type(vit).__name__)
    """)
    assert proc.stdout.strip().endswith("LNormViTModel")


def test_code_files_are_the_modules_and_their_relative_imports(tmp_path):
    gpt = LNormGPTForCausalLM(tiny_gpt_config())
    names = sorted(os.path.basename(p) for p in gpt.code_files())
    assert names == [
        "attention_lnorm.py", "configuration_lnorm_gpt.py", "layers.py", "modeling_lnorm_gpt.py",
        "modeling_utils_lnorm.py", "norm_layers_lnorm.py", "remote_code.py",
    ]
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in gpt.code_files())


def test_save_pretrained_keeps_a_model_card_it_did_not_write(tmp_path):
    model = LNormGPTForCausalLM(tiny_gpt_config()).eval()
    folder = tmp_path / "gpt"
    folder.mkdir()
    user_card = "---\nlicense: mit\n---\n# My model\r\n\nWritten by hand, caf\u00e9.\n".encode()
    (folder / "README.md").write_bytes(user_card)
    model.save_pretrained(folder, training_data="Never shown.")
    assert (folder / "README.md").read_bytes() == user_card
    assert (folder / "model.safetensors").is_file() and (folder / "layers.py").is_file()
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temporary file left behind


def test_generated_model_card_is_refreshed_and_an_edited_one_kept(tmp_path):
    from huggingface_hub import ModelCard

    model = LNormGPTForCausalLM(tiny_gpt_config(norm_type="rmsnorm")).eval()
    folder = tmp_path / "gpt"
    model.save_pretrained(folder, training_data="First corpus.")
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and CARD_MARKER in card and is_generated_card(card)
    assert ModelCard(card).data.library_name == "transformers"  # the marker does not hide the Hub metadata
    assert "First corpus." in card

    model.save_pretrained(folder, training_data="Second corpus.")
    refreshed = (folder / "README.md").read_text(encoding="utf-8")
    assert "Second corpus." in refreshed and "First corpus." not in refreshed and is_generated_card(refreshed)

    edited = refreshed.replace("Second corpus.", "Second corpus, cleaned by hand.").encode("utf-8")
    (folder / "README.md").write_bytes(edited)
    assert not is_generated_card(edited.decode())
    model.save_pretrained(folder, training_data="Third corpus.")
    assert (folder / "README.md").read_bytes() == edited

    (folder / "README.md").unlink()
    (tmp_path / "notes.md").write_text("my notes\n")
    (folder / "README.md").symlink_to(tmp_path / "notes.md")
    model.save_pretrained(folder)
    assert (folder / "README.md").is_symlink() and (tmp_path / "notes.md").read_text() == "my notes\n"
