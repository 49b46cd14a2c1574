"""Typed Hydra schema of ``serve.py`` (``conf/serve.yaml`` holds only Hydra's own settings).

Torch-free so composing the config stays cheap; a wrong key or value fails at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ServeConfig:
    """``python serve.py run_dir=<run> [port=8765 host=127.0.0.1 device=cpu token=...]``."""

    run_dir: str = MISSING  # a train.py output directory (its final/ export is served)
    checkpoint: Optional[str] = None  # noqa: UP045  (a save_pretrained dir instead of <run>/final)
    host: str = "127.0.0.1"  # localhost only; 0.0.0.0 exposes the policy to the network (see docs/serving.md)
    port: int = 8765  # 0: any free port (the address is printed)
    device: str = "cpu"  # torch device of the model, e.g. cuda:0
    token: Optional[str] = None  # noqa: UP045  (shared secret every client must send; None: $VLA_SERVE_TOKEN)
    max_request_mb: float = 16.0  # larger requests get a too_large error reply
    max_image_pixels: int = 16_777_216  # JPEG/PNG images larger than this are refused before decoding
    max_instruction_tokens: int = 512  # longer instructions get an observation error (the model's cost is quadratic)
    stop_timeout_s: float = 3.0  # on SIGTERM, how long a running request may finish before the process exits
    threads: Optional[int] = None  # noqa: UP045  (torch CPU threads; None: torch's default)


def register_serve_config() -> None:
    ConfigStore.instance().store(name="base_serve", node=ServeConfig)


register_serve_config()
