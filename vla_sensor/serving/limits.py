"""Bounded work per request: what the server refuses before a request reaches the model.

The model's cost grows with the square of the prompt length (attention over every token: measured
0.9 s for a 2 k-token instruction, 2.6 s for 16 k on the tiny test model on a 2-core CPU, while
tokenizing 16 k characters takes 6 ms), so the instruction is bounded in tokens; images are bounded
below by one merged vision patch per side, the smallest input the vision tower has a token for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vla_sensor.data.observation import ObservationError

# A byte-level BPE token holds at least one UTF-8 byte, and in practice far fewer than this many
# characters: only this prefix is ever tokenized, so a 16 MiB instruction costs no more than a short one.
MAX_CHARS_PER_TOKEN = 16


def instruction_tokens(tokenizer: Any, text: str, limit: int) -> int:
    """Tokens of ``text`` when at most ``limit``; otherwise a number above ``limit`` (work bounded by ``limit``)."""
    if len(text.encode("utf-8", "surrogatepass")) <= limit:
        return len(text.encode("utf-8", "surrogatepass")) if tokenizer is None else _count(tokenizer, text)
    if tokenizer is None or len(text) > MAX_CHARS_PER_TOKEN * limit:
        return max(limit + 1, len(text) // MAX_CHARS_PER_TOKEN)
    return _count(tokenizer, text)


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def check_request(obs: Mapping[str, Any], tokenizer: Any, max_tokens: int, min_side: int,
                  accepted: set[str] | None = None) -> None:
    """Refuse (ObservationError naming the field and the limit) an instruction over ``max_tokens`` tokens
    or an image with a side below ``min_side`` pixels; anything else is left to the contract's checks.

    ``accepted``: instructions already found within the limit (a robot sends the same one every step:
    it is tokenized once, not per request); those found now are added, up to 256."""
    text = obs.get("instruction")
    if isinstance(text, str) and not (accepted is not None and text in accepted):
        n = instruction_tokens(tokenizer, text, max_tokens)
        if n > max_tokens:
            size = f"{n} tokens" if len(text) <= MAX_CHARS_PER_TOKEN * max_tokens else f"{len(text)} characters"
            raise ObservationError(f"instruction: {size} exceeds the server's limit of {max_tokens} tokens "
                                   "(max_instruction_tokens)")
        if accepted is not None and len(accepted) < 256:
            accepted.add(text)
    images = obs.get("images")
    if isinstance(images, Mapping):
        for view, img in images.items():
            if isinstance(img, np.ndarray) and img.ndim >= 2 and min(img.shape[:2]) < min_side:
                raise ObservationError(f"images[{view!r}]: {img.shape[0]}x{img.shape[1]} is below the model's "
                                       f"minimum of {min_side}x{min_side} pixels")
