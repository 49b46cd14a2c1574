"""Spatial readouts of the backbone's final hidden states (``model.pooling=attention|flatten``).

A pooled vector (the last token, or the mean) squeezes every image token through one position of the
sequence; a head reading it has to recover *where* something sits in the image from whatever the
backbone happened to mix into that token. Here a few learned queries cross-attend over all the
tokens instead, and each image token carries a learned 2-D position embedding (its view, row and
column on the grid after the vision tower's spatial merge, from ``image_grid_thw``), so where a token
sits is known to the head. ``flatten`` keeps every image token's hidden state in its place: the image
tokens, in grid order, concatenated and projected by one linear layer (a linear map on the whole
token grid, the readout a ridge probe of the target's position is).

Token layout: ``token_layout(...)`` gives every sequence position ``(view, row, col)`` as int64,
``view = TEXT`` for text (and sensor) tokens, ``view = PAD`` for padding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

TEXT = -1
PAD = -2
MAX_VIEWS = 8
MAX_GRID = 128  # merged tokens per image side: 128 x 28 = 3584 pixels with Qwen-VL's patches


def token_layout(ids: Tensor, mask: Tensor, image_token_id: int, grid_thw: Tensor, merge: int) -> Tensor:
    """(B, L, 3) int64 ``(view, row, col)`` of each token; images in ``grid_thw`` order, views per sample
    in order, merged tokens row-major (how the vision tower emits them)."""
    b, length = ids.shape
    out = torch.zeros(b, length, 3, dtype=torch.long, device=ids.device)
    out[..., 0] = torch.where(mask.bool(), TEXT, PAD)
    views = grid_thw.shape[0] // max(b, 1)
    if views > MAX_VIEWS:
        raise ValueError(f"attention readout: {views} views per sample, at most {MAX_VIEWS}")
    grids = grid_thw.detach().cpu().tolist()
    for i in range(b):
        layout = []
        for v in range(views):
            t, h, w = grids[i * views + v]
            rows, cols = h // merge, w // merge
            if t * rows > MAX_GRID or cols > MAX_GRID:
                raise ValueError(f"attention readout: an image of {t * rows}x{cols} merged tokens, at most "
                                 f"{MAX_GRID} per side; use smaller images (data.image_size)")
            r = torch.arange(t * rows).repeat_interleave(cols)
            c = torch.arange(cols).repeat(t * rows)
            layout.append(torch.stack([torch.full_like(r, v), r, c], dim=1))
        pos = (ids[i] == image_token_id).nonzero().squeeze(1)
        flat = torch.cat(layout).to(ids.device) if layout else torch.zeros(0, 3, dtype=torch.long, device=ids.device)
        if flat.shape[0] != pos.shape[0]:
            raise ValueError(f"sample {i}: {pos.shape[0]} image tokens in input_ids, image_grid_thw gives "
                             f"{flat.shape[0]}; build inputs with model.build_sample_transform()")
        out[i, pos] = flat
    return out


class AttentionReadout(nn.Module):
    """``num_queries`` learned queries, one multi-head cross-attention over the tokens; (B, Q * hidden)."""

    def __init__(self, hidden: int, num_queries: int = 4, num_heads: int = 4) -> None:
        super().__init__()
        if num_queries < 1:
            raise ValueError(f"model.readout_queries must be >= 1, got {num_queries}")
        if num_heads < 1 or hidden % num_heads:
            raise ValueError(f"model.readout_heads={num_heads} must divide the backbone's hidden size {hidden}")
        self.hidden, self.num_queries = int(hidden), int(num_queries)
        self.out_dim = self.hidden * self.num_queries
        self.queries = nn.Parameter(torch.randn(num_queries, hidden) * 0.02)
        self.norm = nn.LayerNorm(hidden)
        self.view_embed = nn.Embedding(MAX_VIEWS + 1, hidden)  # index 0: a text token
        self.row_embed = nn.Embedding(MAX_GRID, hidden)
        self.col_embed = nn.Embedding(MAX_GRID, hidden)
        for emb in (self.view_embed, self.row_embed, self.col_embed):
            nn.init.normal_(emb.weight, std=0.02)
        self.attn = nn.MultiheadAttention(hidden, num_heads, batch_first=True)

    def position(self, layout: Tensor) -> Tensor:
        """(B, L, hidden) position embedding: view, plus row and column for image tokens."""
        view = layout[..., 0]
        image = (view >= 0).unsqueeze(-1)
        emb = self.view_embed((view + 1).clamp_min(0))
        grid = self.row_embed(layout[..., 1].clamp(0, MAX_GRID - 1)) + self.col_embed(layout[..., 2].clamp(0, MAX_GRID - 1))
        return emb + grid * image

    def forward(self, tokens: Tensor, layout: Tensor) -> Tensor:
        x = self.norm(tokens.float()) + self.position(layout)
        pad = layout[..., 0] == PAD
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)
        out, _ = self.attn(q, x, x, key_padding_mask=pad, need_weights=False)
        return out.reshape(x.shape[0], self.out_dim)


class FlattenReadout(nn.Module):
    """The ``num_tokens`` image tokens (grid order, each layer-normalised), concatenated; one linear
    layer to ``out_dim``. Text tokens are not read. Every sample must carry the same number of image
    tokens: the views and image size the model was built for."""

    def __init__(self, hidden: int, num_tokens: int, out_dim: int = 256) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ValueError(f"flatten readout: expected at least 1 image token per sample, got {num_tokens}")
        if out_dim < 1:
            raise ValueError(f"model.readout_dim must be >= 1, got {out_dim}")
        self.hidden, self.num_tokens, self.out_dim = int(hidden), int(num_tokens), int(out_dim)
        self.norm = nn.LayerNorm(hidden)
        self.proj = nn.Linear(self.num_tokens * self.hidden, self.out_dim)

    def select(self, tokens: Tensor, layout: Tensor) -> tuple[Tensor, Tensor]:
        """The image tokens only, (B, num_tokens, hidden) and their layout (B, num_tokens, 3), in grid
        order: all this readout reads, hence all the feature cache stores for it."""
        image = layout[..., 0] >= 0
        counts = image.sum(1)
        if bool((counts != self.num_tokens).any()):
            raise ValueError(f"flatten readout: built for {self.num_tokens} image tokens per sample (its views "
                             f"and data.image_size), got {counts.tolist()}; retrain for other views or sizes")
        b = tokens.shape[0]  # boolean indexing is row-major: each sample's grid order is kept
        return tokens[image].reshape(b, self.num_tokens, self.hidden), layout[image].reshape(b, self.num_tokens, 3)

    def forward(self, tokens: Tensor, layout: Tensor) -> Tensor:
        x, _ = self.select(tokens, layout)
        return self.proj(self.norm(x.float()).flatten(1))


def image_tokens_per_sample(views: int, image_size: tuple[int, int], factor: int) -> int:
    """Merged image tokens of ``views`` images resized to ``image_size`` (``factor``: patch x merge pixels)."""
    return int(views) * (int(image_size[0]) // factor) * (int(image_size[1]) // factor)
