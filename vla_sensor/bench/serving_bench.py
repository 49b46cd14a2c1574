"""Policy-server latency: round trips over loopback at 10 Hz, split into where the time goes.

The tiny model (random weights) is served in this process by :class:`vla_sensor.serving.server.PolicyServer`
and driven by :class:`vla_sensor.serving.PolicyClient` as a robot would: one request every 100 ms with
two 224x224 views and 65 new sensor rows (0.1 s at 650 Hz). The target is the server's overhead —
everything but the model forward, seen from the client — at most 5 ms at p99.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from vla_sensor.bench import fmt

TARGET_OVERHEAD_P99_MS = 5.0
RATE_HZ = 10.0
ROWS = 65
VIEWS = ["left", "oak"]
PARTS = {  # timing key -> what it measures
    "client_encode_ms": "client: encode the request",
    "transfer_ms": "transfer (loopback, websocket framing, both ways)",
    "queue_ms": "server: wait for the model thread",
    "decode_ms": "server: decode the request",
    "preprocess_ms": "server: pre-processing (window, resize, processor, collate)",
    "model_ms": "server: model forward",
    "encode_ms": "server: encode the reply",
    "client_decode_ms": "client: decode the reply",
    "serving_ms": "serving machinery: everything but pre-processing and model",
    "overhead_ms": "overhead: everything but the model forward",
    "total_ms": "total, seen by the client",
}


def synthetic_observations(count: int, *, seed: int = 0, image_size: int = 224, start: float = 0.0,
                           rows: int = ROWS) -> list[dict[str, Any]]:
    """``count`` observations of random images and ``rows`` new 650 Hz sensor samples each, from ``start`` s."""
    rng = np.random.default_rng(seed)
    out, t = [], float(start)
    for _ in range(count):
        ts = t + np.arange(1, rows + 1) / 650.0
        t = float(ts[-1])
        out.append({"images": {v: rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8) for v in VIEWS},
                    "sensor": {"timestamps": ts, "values": rng.standard_normal((rows, 1026)).astype(np.float32)},
                    "instruction": "insert the needle"})
    return out


def measure_serving(quick: bool) -> dict[str, Any]:
    """p50/p99 of each part over ``quick`` 40 or 300 requests at 10 Hz (after 5 untimed warm-ups)."""
    import torch
    from omegaconf import OmegaConf

    from vla_sensor.data.config import DataConfig
    from vla_sensor.eval.policy import LoadedPolicy
    from vla_sensor.models.vla import build_model
    from vla_sensor.serving import PolicyClient
    from vla_sensor.serving.codec import pack
    from vla_sensor.serving.protocol import encode_observation
    from vla_sensor.serving.server import serve_in_background

    count, warmup = (40 if quick else 300), 5
    model = build_model({"sensor_hidden_dim": 64, "sensor_output_dim": 128}, action_dim=3, horizon=8,
                        view_selection=VIEWS, image_size=(224, 224))
    policy = LoadedPolicy(model, OmegaConf.structured(DataConfig))
    requests = synthetic_observations(warmup + count)
    samples: dict[str, list[float]] = {k: [] for k in PARTS}
    with serve_in_background(policy) as server, PolicyClient("127.0.0.1", server.port) as client:
        client.reset()
        request_bytes = len(pack(encode_observation(requests[0])))
        next_tick = time.perf_counter()
        for i, obs in enumerate(requests):
            time.sleep(max(0.0, next_tick - time.perf_counter()))
            next_tick += 1.0 / RATE_HZ
            client.predict(obs)
            if i < warmup:
                continue
            t = dict(client.last_timing)
            t["total_ms"] = t["client_encode_ms"] + t["round_trip_ms"] + t["client_decode_ms"]
            t["overhead_ms"] = t["total_ms"] - t["model_ms"]
            t["serving_ms"] = t["overhead_ms"] - t["preprocess_ms"]
            for k in PARTS:
                samples[k].append(t[k])
    parts = {k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))} for k, v in samples.items()}
    overhead_p99 = parts["overhead_ms"]["p99"]
    return {
        "requests": count, "rate_hz": RATE_HZ, "views": VIEWS, "image_size": [224, 224], "sensor_rows": ROWS,
        "request_bytes": request_bytes, "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "parts_ms": parts, "target_overhead_p99_ms": TARGET_OVERHEAD_P99_MS,
        "meets_target": overhead_p99 <= TARGET_OVERHEAD_P99_MS,
    }


def format_serving_section(result: dict[str, Any]) -> str:
    """The benchmark report's policy-server section (markdown)."""
    parts = result["parts_ms"]
    verdict = "meets" if result["meets_target"] else "misses"
    load = result["load_average"]
    lines = [
        "### Policy server",
        "",
        f"Loopback, {result['rate_hz']:.0f} Hz, tiny model (random weights), {len(result['views'])} views "
        f"{result['image_size'][0]}x{result['image_size'][1]} + {result['sensor_rows']} sensor rows per request "
        f"({fmt.nbytes(result['request_bytes'])}), {result['requests']} requests, {result['torch_threads']} torch "
        f"threads, load average {fmt.NA if load is None else f'{load:.1f}'}.",
        "",
        "| part | p50 | p99 |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {parts[k]['p50']:.2f} ms | {parts[k]['p99']:.2f} ms |" for k, label in PARTS.items()]
    lines += ["", f"Overhead at p99: {parts['overhead_ms']['p99']:.2f} ms ({verdict} ≤ "
                  f"{result['target_overhead_p99_ms']:.0f} ms)."]
    return "\n".join(lines) + "\n"
