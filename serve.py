"""Serve a trained run's policy over websockets: ``python serve.py run_dir=outputs/<date>/<time>``.

Clients connect with ``vla_sensor.serving.PolicyClient(host, port)`` (see docs/serving.md). Binds to
127.0.0.1 unless ``host`` says otherwise; with ``token`` (or ``$VLA_SERVE_TOKEN``) set, every client
must send it. SIGTERM or Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import logging
import os

import hydra
from omegaconf import DictConfig

import vla_sensor.hydra_dirs
import vla_sensor.serving.config  # noqa: F401  (registers the schema serve.yaml builds on)

log = logging.getLogger("serve")


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    import torch

    from vla_sensor.eval.policy import LoadedPolicy
    from vla_sensor.serving.protocol import TOKEN_ENV
    from vla_sensor.serving.server import PolicyServer, run_server

    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    policy = LoadedPolicy.from_run(cfg.run_dir, cfg.checkpoint, device=cfg.device)
    token = cfg.token or os.environ.get(TOKEN_ENV) or None
    server = PolicyServer(policy, host=cfg.host, port=cfg.port, token=token,
                          max_request_bytes=int(cfg.max_request_mb * 2**20), max_image_pixels=cfg.max_image_pixels,
                          max_instruction_tokens=cfg.max_instruction_tokens, stop_timeout_s=cfg.stop_timeout_s)

    def ready(s: PolicyServer) -> None:
        print(f"serving {cfg.run_dir} on ws://{s.host}:{s.port} (views {policy.views}, {policy.horizon} actions "
              f"per chunk, token {'required' if token else 'off'})", flush=True)

    run_server(server, ready)
    log.info("stopped after %d requests", server.requests)
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
