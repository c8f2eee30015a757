"""ImageGPT mode of LNormGPT: images as sequences of color-cluster tokens, and completing an image from its top.

``ImageGPTColorProcessor`` quantizes every pixel to the nearest of ``K`` colors
(cluster centres fitted with k-means on training pixels), reads the image in
raster order and prepends a start token (id ``K``), so an ``LNormGPTForCausalLM``
with ``vocab_size=K + 1`` and ``max_position_embeddings >= H * W + 1`` models
images like text. ``decode`` maps tokens back to colors; ``complete_images``
keeps the top rows of each image and lets ``generate()`` draw the rest.

Examples:
    >>> import torch
    >>> from hf_lnorm.models import ImageGPTColorProcessor
    >>> images = torch.rand(16, 8, 8)  # (N, 8, 8) grey levels in [0, 1], e.g. sklearn's digits / 16
    >>> processor = ImageGPTColorProcessor.fit(images, n_clusters=8)
    >>> tokens = processor.encode(images[:2])  # start token + 64 pixels
    >>> tokens.shape, int(tokens[0, 0]) == processor.bos_token_id
    (torch.Size([2, 65]), True)
    >>> processor.decode(tokens).shape
    torch.Size([2, 8, 8])
"""

from __future__ import annotations

import json
import os
from typing import Optional

import torch

CLUSTERS_FILE = "image_clusters.json"


class ImageGPTColorProcessor:
    """Maps images ``(B, H, W)`` or ``(B, H, W, C)`` to color-cluster token ids and back.

    Usually built with ``fit`` on training images and saved next to the model
    with ``save_pretrained``. The matching ``LNormGPTConfig`` has
    ``vocab_size=processor.vocab_size``, ``bos_token_id=processor.bos_token_id``,
    ``image_size=processor.image_size`` and ``max_position_embeddings >=
    processor.sequence_length``.

    Args:
        clusters: ``(K, C)`` cluster colors (the pixel value range of the training data).
        image_size: side of the square images (``H == W``).

    Raises:
        ValueError: ``clusters`` is not a 2-D tensor with at least two colors.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import ImageGPTColorProcessor
        >>> processor = ImageGPTColorProcessor(torch.tensor([[0.0], [0.5], [1.0]]), image_size=2)
        >>> processor.vocab_size, processor.sequence_length
        (4, 5)
        >>> processor.encode(torch.tensor([[[0.1, 0.9], [0.4, 0.6]]]))
        tensor([[3, 0, 2, 1, 1]])
    """

    def __init__(self, clusters: torch.Tensor, image_size: int):
        clusters = torch.as_tensor(clusters, dtype=torch.float32)
        if clusters.dim() != 2 or clusters.shape[0] < 2:
            raise ValueError(f"clusters must be a (K >= 2, channels) tensor, got shape {tuple(clusters.shape)}")
        self.clusters = clusters
        self.image_size = int(image_size)

    @property
    def n_clusters(self) -> int:
        """The number of colors ``K`` (token ids ``0 .. K-1``)."""
        return self.clusters.shape[0]

    @property
    def bos_token_id(self) -> int:
        """The start token (one past the last color)."""
        return self.n_clusters

    @property
    def vocab_size(self) -> int:
        """``K + 1``: the colors and the start token."""
        return self.n_clusters + 1

    @property
    def sequence_length(self) -> int:
        """Tokens per image, start token included."""
        return self.image_size * self.image_size + 1

    @classmethod
    def fit(cls, images: torch.Tensor, n_clusters: int = 8, iterations: int = 25, seed: int = 0, max_pixels: int = 200_000):
        """Fit the color clusters with k-means (k-means++ seeding) on the pixels of ``images``.

        Args:
            images: ``(N, H, W)`` or ``(N, H, W, C)`` float pixels; square images.
            n_clusters: number of colors ``K``.
            iterations: Lloyd iterations.
            seed: seed of the pixel sample and the seeding.
            max_pixels: pixels sampled for fitting.

        Returns:
            (ImageGPTColorProcessor): the fitted processor; colors are ordered dark to bright.

        Raises:
            ValueError: the images are not square, or ``n_clusters`` is below 2.
        """
        pixels, size = cls._pixels(images)
        gen = torch.Generator().manual_seed(seed)
        if pixels.shape[0] > max_pixels:
            pixels = pixels[torch.randperm(pixels.shape[0], generator=gen)[:max_pixels]]
        if n_clusters < 2:
            raise ValueError(f"n_clusters={n_clusters} must be at least 2")
        centres = pixels[torch.randint(pixels.shape[0], (1,), generator=gen)]
        for _ in range(1, n_clusters):  # k-means++: next centre far from the chosen ones
            dist = torch.cdist(pixels, centres).min(dim=1).values.pow(2)
            if float(dist.sum()) == 0:
                break
            centres = torch.cat([centres, pixels[torch.multinomial(dist, 1, generator=gen)]])
        for _ in range(iterations):
            assign = torch.cdist(pixels, centres).argmin(dim=1)
            for k in range(centres.shape[0]):
                members = pixels[assign == k]
                if len(members):
                    centres[k] = members.mean(dim=0)
        order = centres.sum(dim=1).argsort()  # dark to bright, so ids read naturally
        return cls(centres[order], size)

    @staticmethod
    def _pixels(images: torch.Tensor):
        images = torch.as_tensor(images, dtype=torch.float32)
        if images.dim() == 3:
            images = images.unsqueeze(-1)
        if images.dim() != 4 or images.shape[1] != images.shape[2]:
            raise ValueError(f"expected square images (N, H, W) or (N, H, W, C), got shape {tuple(images.shape)}")
        return images.reshape(-1, images.shape[-1]), images.shape[1]

    def encode(self, images: torch.Tensor, add_bos: bool = True) -> torch.Tensor:
        """Token ids ``(B, H*W [+1])``: nearest cluster of every pixel in raster order, after a start token.

        Args:
            images: ``(B, H, W)`` or ``(B, H, W, C)`` float pixels of the fitted size.
            add_bos: prepend the start token.

        Returns:
            Long tensor of token ids.

        Raises:
            ValueError: the images have another size or channel count than the clusters.
        """
        images = torch.as_tensor(images, dtype=torch.float32)
        batch = images.shape[0]
        pixels, size = self._pixels(images)
        if size != self.image_size:
            raise ValueError(f"images are {size}x{size}; this processor was fitted on {self.image_size}x{self.image_size}")
        if pixels.shape[-1] != self.clusters.shape[-1]:
            raise ValueError(f"images have {pixels.shape[-1]} channels; the clusters have {self.clusters.shape[-1]}")
        tokens = torch.cdist(pixels, self.clusters).argmin(dim=1).view(batch, -1)
        if add_bos:
            tokens = torch.cat([torch.full((batch, 1), self.bos_token_id, dtype=torch.long), tokens], dim=1)
        return tokens

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Images ``(B, H, W)`` (or ``(B, H, W, C)`` for C > 1) from token ids; a leading start token is dropped.

        Args:
            tokens: ``(B, H*W)`` color ids, or ``(B, H*W + 1)`` with the start token first.

        Returns:
            The cluster color of every token, as images.

        Raises:
            ValueError: the wrong number of tokens, or an id that is not a color.
        """
        tokens = torch.as_tensor(tokens).long()
        if tokens.shape[-1] == self.sequence_length:
            tokens = tokens[:, 1:]
        if tokens.shape[-1] != self.image_size**2:
            raise ValueError(f"expected {self.image_size ** 2} pixel tokens (or {self.sequence_length} with the start token), got {tokens.shape[-1]}")
        if int(tokens.max()) >= self.n_clusters or int(tokens.min()) < 0:
            raise ValueError(f"token ids must be colors in [0, {self.n_clusters - 1}]; got {int(tokens.min())}..{int(tokens.max())}")
        colors = self.clusters.to(tokens.device)[tokens]  # (B, H*W, C)
        images = colors.view(tokens.shape[0], self.image_size, self.image_size, -1)
        return images.squeeze(-1) if images.shape[-1] == 1 else images

    def save_pretrained(self, folder: str) -> None:
        """Write ``image_clusters.json`` into ``folder`` (created if missing).

        Args:
            folder: usually the model's folder, next to its weights.
        """
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, CLUSTERS_FILE)
        with open(path + ".tmp", "w") as handle:
            json.dump({"image_size": self.image_size, "clusters": self.clusters.tolist()}, handle)
        os.replace(path + ".tmp", path)

    @classmethod
    def from_pretrained(cls, folder: str) -> "ImageGPTColorProcessor":
        """Load what ``save_pretrained`` wrote.

        Args:
            folder: a folder holding ``image_clusters.json``.

        Returns:
            The processor.

        Raises:
            FileNotFoundError: the folder has no ``image_clusters.json``.
        """
        with open(os.path.join(folder, CLUSTERS_FILE)) as handle:
            data = json.load(handle)
        return cls(torch.tensor(data["clusters"]), data["image_size"])


@torch.no_grad()
def complete_images(model, processor: ImageGPTColorProcessor, images: torch.Tensor, keep_rows: Optional[int] = None, **generate_kwargs):
    """Keep the top ``keep_rows`` rows of each image and generate the rest with ``model.generate()``.

    The start token is never generated (``bad_words_ids``), so every generated
    token is a color.

    Args:
        model (LNormGPTForCausalLM): a model trained on ``processor`` tokens.
        processor: the color processor.
        images: ``(B, H, W[, C])`` images.
        keep_rows: rows kept from the input (default: the top half).
        **generate_kwargs (Any): e.g. ``do_sample=True, top_k=4``; greedy by default.

    Returns:
        (tuple[torch.Tensor, torch.Tensor]): ``(completed images, generated token ids (B, H*W + 1))``.

    Raises:
        ValueError: ``keep_rows`` outside ``[0, image_size - 1]``.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import ImageGPTColorProcessor, LNormGPTConfig, LNormGPTForCausalLM, complete_images
        >>> images = torch.rand(4, 4, 4)
        >>> processor = ImageGPTColorProcessor.fit(images, n_clusters=4)
        >>> config = LNormGPTConfig(vocab_size=processor.vocab_size, max_position_embeddings=processor.sequence_length,
        ...                         hidden_size=32, num_hidden_layers=1, num_attention_heads=4, image_size=4,
        ...                         bos_token_id=processor.bos_token_id)
        >>> completed, tokens = complete_images(LNormGPTForCausalLM(config).eval(), processor, images[:2], keep_rows=2)
        >>> completed.shape, tokens.shape
        (torch.Size([2, 4, 4]), torch.Size([2, 17]))
    """
    keep_rows = processor.image_size // 2 if keep_rows is None else keep_rows
    if not 0 <= keep_rows < processor.image_size:
        raise ValueError(f"keep_rows={keep_rows} must be in [0, {processor.image_size - 1}]")
    prompt = processor.encode(images)[:, : 1 + keep_rows * processor.image_size].to(model.device)
    new_tokens = processor.sequence_length - prompt.shape[1]
    generate_kwargs.setdefault("do_sample", False)
    bad = [[t] for t in range(processor.n_clusters, model.config.vocab_size)]  # never emit the start token
    tokens = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        bad_words_ids=bad,
        pad_token_id=processor.bos_token_id,
        eos_token_id=None,
        **generate_kwargs,
    )
    return processor.decode(tokens.cpu()), tokens
