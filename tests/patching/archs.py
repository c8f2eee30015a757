"""Tiny random configs for the architectures the patch tests cover (no download)."""

from transformers import AutoConfig

_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, vocab_size=99)
_DECODER = dict(_TEXT, num_key_value_heads=2, max_position_embeddings=64)

ARCHS = {
    # encoders
    "bert": dict(_TEXT),
    "roberta": dict(_TEXT),
    "distilbert": dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, vocab_size=99),
    "albert": dict(_TEXT, embedding_size=16),
    "deberta-v2": dict(_TEXT, max_position_embeddings=64, relative_attention=True, position_buckets=8, pos_att_type=["p2c", "c2p"]),
    # decoders
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, vocab_size=99, n_positions=64),
    "gpt_neox": dict(_TEXT, max_position_embeddings=64),
    "opt": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=37, vocab_size=99, word_embed_proj_dim=32),
    "bloom": dict(hidden_size=32, n_layer=2, n_head=4, vocab_size=99),
    "llama": dict(_DECODER),
    "gemma": dict(_DECODER, head_dim=8),
    "qwen2": dict(_DECODER),
    # encoder-decoders
    "t5": dict(d_model=32, num_layers=2, num_heads=4, d_ff=37, d_kv=8, vocab_size=99),
    "bart": dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                 encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=99, max_position_embeddings=64),
    "whisper": dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                    encoder_ffn_dim=37, decoder_ffn_dim=37, vocab_size=99, num_mel_bins=16, max_source_positions=16,
                    max_target_positions=32, decoder_start_token_id=1, pad_token_id=0, eos_token_id=2, bos_token_id=1),
    # vision
    "vit": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=16, patch_size=4),
    "swin": dict(image_size=16, patch_size=2, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=2),
    "convnext": dict(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32),
    # speech
    "wav2vec2": dict(_TEXT, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=8,
                     num_conv_pos_embedding_groups=2, feat_extract_norm="group", do_stable_layer_norm=False),
}


def tiny_config(arch: str):
    return AutoConfig.for_model(arch, **ARCHS[arch])
