"""Train a character-level LNormGPT on Shakespeare, push it to a Hub, load it back and generate.

The model saves its own modeling code next to the weights, so
`AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)` also loads it
where hf_lnorm is not installed. The model is saved under --output-dir; with
--endpoint it is also pushed (token from HF_TOKEN or `hf auth login`) and loaded back from there.

    python examples/train_and_push_gpt.py                                      # 600 steps, saved locally
    python examples/train_and_push_gpt.py --endpoint https://huggingface.co --repo-id lnorm-gpt-shakespeare
    python examples/train_and_push_gpt.py --quick                              # a tiny model, 40 steps
"""

import argparse
import os
import tempfile

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a tiny model, 40 training steps")
parser.add_argument("--endpoint", help="Hub URL to push to (default: save to --output-dir only)")
parser.add_argument("--repo-id", default="lnorm-gpt-shakespeare", help="repository name on the Hub")
parser.add_argument("--output-dir", help="new folder for the saved model (default: a fresh temporary folder)")
args = parser.parse_args()
if args.output_dir and os.path.exists(args.output_dir):
    parser.error(f"--output-dir {args.output_dir!r} already exists; pass a new folder")
if args.endpoint:  # huggingface_hub reads these when it is imported: set them before the imports below
    os.environ.update(HF_ENDPOINT=args.endpoint, HF_HUB_OFFLINE="0")

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from hf_lnorm.models import LNormGPTConfig, LNormGPTForCausalLM
from hf_lnorm.resources import data_file

torch.manual_seed(0)
text = data_file("shakespeare_sample.txt").read_text(encoding="utf-8")[: 30_000 if args.quick else None]
vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *sorted(set(text))])}
char_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
char_level.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # one token per character
char_level.decoder = decoders.Fuse()  # decode without spaces between the characters
tokenizer = PreTrainedTokenizerFast(tokenizer_object=char_level, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                    unk_token="<unk>", model_input_names=["input_ids", "attention_mask"])
data = torch.tensor(tokenizer(text)["input_ids"])

width, layers, steps, block = (64, 2, 40, 64) if args.quick else (192, 4, 600, 128)
config = LNormGPTConfig(vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
                        max_position_embeddings=2 * block, dropout=0.0, norm_type="layernorm", norm_position="pre",
                        pad_token_id=0, bos_token_id=1, eos_token_id=2)
model = LNormGPTForCausalLM(config)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3 if args.quick else 1e-3)
for step in range(steps + 1):
    starts = torch.randint(0, len(data) - block, (16,)).tolist()
    batch = torch.stack([data[s:s + block] for s in starts])  # (16, block) character ids
    loss = model(input_ids=batch, labels=batch).loss  # the model shifts the labels
    if step % 100 == 0 or step == steps:
        print(f"step {step:4d}  loss {loss.item():.3f}")
    if step < steps:
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

where = os.path.join(args.output_dir or tempfile.mkdtemp(prefix="train_and_push_gpt-"), "lnorm-gpt-shakespeare")
model.save_pretrained(where, training_data="shakespeare_sample.txt shipped with hf_lnorm, character level")
tokenizer.save_pretrained(where)
print(f"saved to {where}")
if args.endpoint:
    commit = model.push_to_hub(args.repo_id, tokenizer=tokenizer, training_data="Shakespeare sample, character level")
    where = commit.repo_url.repo_id
    print(f"pushed to {args.endpoint} as {where}")

loaded = AutoModelForCausalLM.from_pretrained(where, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(where)
with torch.no_grad():
    out = loaded.generate(**tokenizer("ROMEO:", return_tensors="pt"), max_new_tokens=60, do_sample=False, pad_token_id=0)
print(f"loaded {type(loaded).__name__} from {type(loaded).__module__}")
print("generated:", repr(tokenizer.decode(out[0])))
