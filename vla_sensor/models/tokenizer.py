"""Offline tokenizers for Qwen-VL backbones.

The tiny random backbone needs a tokenizer that never touches the network. It is a byte-level BPE
with the 256 byte tokens and Qwen's special tokens. The special tokens keep Qwen's order, so the tiny
ids are Qwen's ids shifted (``<|endoftext|>`` 151643 -> 256), and a random-weight model with Qwen's
real vocabulary can use the same tokenizer with Qwen's real ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Qwen2-VL / Qwen2.5-VL special tokens and their ids in the official vocabulary.
QWEN_SPECIAL_TOKEN_IDS: dict[str, int] = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
}
# Placeholder for sensor tokens in token-fusion mode. Not in Qwen's vocabulary: it is added to a
# pretrained tokenizer (its id still fits in Qwen's padded embedding matrix); its embedding is never
# read, because the projected sensor tokens replace it.
SENSOR_TOKEN = "<|sensor_pad|>"
QWEN_SENSOR_TOKEN_ID = 151665

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"

_QWEN_FIRST_SPECIAL = QWEN_SPECIAL_TOKEN_IDS["<|endoftext|>"]


def tiny_special_token_ids(offset: int = 256) -> dict[str, int]:
    """Qwen's special tokens (and the sensor token) shifted to start right after the byte tokens."""
    ids = {tok: offset + i - _QWEN_FIRST_SPECIAL for tok, i in QWEN_SPECIAL_TOKEN_IDS.items()}
    ids[SENSOR_TOKEN] = offset + QWEN_SENSOR_TOKEN_ID - _QWEN_FIRST_SPECIAL
    return ids


def qwen_special_token_ids() -> dict[str, int]:
    """Qwen's real special-token ids plus the sensor placeholder."""
    return {**QWEN_SPECIAL_TOKEN_IDS, SENSOR_TOKEN: QWEN_SENSOR_TOKEN_ID}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_byte_tokenizer(special_token_ids: Mapping[str, int] | None = None) -> Any:
    """A byte-level BPE fast tokenizer: ids 0..255 are bytes, special tokens at the given ids.

    Built entirely offline with ``tokenizers`` and wrapped in a transformers fast tokenizer, so it
    saves and reloads with ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` like a real one.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = dict(special_token_ids or tiny_special_token_ids())
    byte_map = _bytes_to_unicode()
    vocab = {byte_map[b]: b for b in range(256)}
    clash = [t for t, i in specials.items() if i < 256 or list(specials.values()).count(i) > 1]
    if clash:
        raise ValueError(f"special token ids must be >= 256 and unique, got clashes for {clash}")
    vocab.update(specials)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=sorted(specials, key=specials.get),
    )
    fast.add_special_tokens({"additional_special_tokens": sorted(specials, key=specials.get)})
    got = {t: fast.convert_tokens_to_ids(t) for t in specials}
    if got != specials:
        raise RuntimeError(f"byte tokenizer special ids {got} differ from the requested {specials}")
    return fast


def ensure_sensor_token(tokenizer: Any, vocab_size: int) -> int:
    """Id of the sensor placeholder, added to a pretrained tokenizer that lacks it."""
    tid = tokenizer.convert_tokens_to_ids(SENSOR_TOKEN)
    if tid is None or tid == tokenizer.unk_token_id:
        tokenizer.add_special_tokens({"additional_special_tokens": [SENSOR_TOKEN]})
        tid = tokenizer.convert_tokens_to_ids(SENSOR_TOKEN)
    if tid >= vocab_size:
        raise ValueError(
            f"sensor placeholder {SENSOR_TOKEN} got id {tid}, outside the backbone's embedding matrix "
            f"(vocab_size={vocab_size})"
        )
    return int(tid)


def check_token_ids(tokenizer: Any, expected: Mapping[str, int], where: str) -> None:
    """Fail loudly when the tokenizer's vision token ids differ from the backbone config's."""
    bad = {}
    for token, want in expected.items():
        got = tokenizer.convert_tokens_to_ids(token)
        if got != want:
            bad[token] = (got, want)
    if bad:
        detail = ", ".join(f"{t}: tokenizer {g} vs config {w}" for t, (g, w) in bad.items())
        raise ValueError(f"tokenizer does not match the backbone config of {where}: {detail}")
