"""ImageGPT mode: color-cluster tokens fitted on the scikit-learn digits, training, and completing the bottom half."""

import pytest
import torch

from hf_lnorm.models import ImageGPTColorProcessor, LNormGPTConfig, LNormGPTForCausalLM, complete_images

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def _digits():
    return torch.tensor(sklearn_datasets.load_digits().images, dtype=torch.float32) / 16.0  # (1797, 8, 8) in [0, 1]


def test_processor_round_trip_and_errors(tmp_path):
    images = _digits()
    processor = ImageGPTColorProcessor.fit(images, n_clusters=8)
    tokens = processor.encode(images[:5])
    assert tokens.shape == (5, 65) and (tokens[:, 0] == 8).all() and int(tokens[:, 1:].max()) < 8
    decoded = processor.decode(tokens)
    assert decoded.shape == (5, 8, 8)
    assert (decoded - images[:5]).abs().mean() < 0.05  # 8 gray levels reproduce the 17-level digits closely
    assert torch.equal(processor.encode(decoded), tokens)  # cluster colors map to themselves
    processor.save_pretrained(tmp_path)
    torch.testing.assert_close(ImageGPTColorProcessor.from_pretrained(tmp_path).clusters, processor.clusters)
    with pytest.raises(ValueError, match="fitted on 8x8"):
        processor.encode(torch.zeros(1, 4, 4))


def test_trains_on_digits_and_completes_the_bottom_half():
    images = _digits()
    processor = ImageGPTColorProcessor.fit(images[:1500], n_clusters=8)
    tokens = processor.encode(images)
    train, test_images = tokens[:1500], images[1500:1504]
    config = LNormGPTConfig(
        vocab_size=processor.vocab_size, max_position_embeddings=processor.sequence_length, hidden_size=64,
        num_hidden_layers=2, num_attention_heads=4, dropout=0.0, image_size=8, bos_token_id=processor.bos_token_id,
    )
    torch.manual_seed(0)
    model = LNormGPTForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for step in range(40):
        batch = train[torch.randint(len(train), (32,))]
        loss = model(batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    model.eval()
    completed, generated = complete_images(model, processor, test_images)
    assert completed.shape == (4, 8, 8)
    quantized = processor.decode(processor.encode(test_images))
    assert torch.equal(completed[:, :4], quantized[:, :4])  # the given top half is kept
    assert int(generated[:, 1:].max()) < 8  # only colors, never the start token
    no_cache, _ = complete_images(model, processor, test_images, use_cache=False)
    assert torch.equal(no_cache, completed)
