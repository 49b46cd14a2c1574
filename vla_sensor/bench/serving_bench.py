"""Policy-server latency: round trips over loopback at 10 Hz, split into where the time goes.

The tiny model (random weights) is served in this process by :class:`vla_sensor.serving.server.PolicyServer`
and driven from another process (its own interpreter, as a robot's is) by :class:`vla_sensor.serving.PolicyClient`:
one request every 100 ms with one or two 224x224 views and 65 new sensor rows (0.1 s at 650 Hz). The target is the server's overhead —
everything but the model forward, seen from the client — at most 5 ms at p99.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
    "preprocess_ms": "server: pre-processing (checks, sensor window, resize, patches, prompt, batch)",
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


def _drive(port: int, count: int, warmup: int, views: list[str]) -> dict[str, list[float]]:
    """The client's side (run in its own process, as a robot is): ``warmup + count`` requests at 10 Hz."""
    from vla_sensor.serving import PolicyClient

    requests = synthetic_observations(warmup + count)
    for obs in requests:
        obs["images"] = {v: obs["images"][v] for v in views}
    samples: dict[str, list[float]] = {k: [] for k in PARTS}
    with PolicyClient("127.0.0.1", port) as client:
        client.reset()
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
    return samples


def measure_views(views: list[str], count: int, warmup: int = 5) -> dict[str, Any]:
    """p50/p99 of each part for one view set: the server in this process, the client in another."""
    import torch
    from omegaconf import OmegaConf

    from vla_sensor.data.config import DataConfig
    from vla_sensor.eval.policy import LoadedPolicy
    from vla_sensor.models.vla import build_model
    from vla_sensor.serving.codec import pack
    from vla_sensor.serving.protocol import encode_observation
    from vla_sensor.serving.server import serve_in_background

    model = build_model({"sensor_hidden_dim": 64, "sensor_output_dim": 128}, action_dim=3, horizon=8,
                        view_selection=views, image_size=(224, 224))
    policy = LoadedPolicy(model, OmegaConf.structured(DataConfig))
    first = synthetic_observations(1)[0]
    first["images"] = {v: first["images"][v] for v in views}
    with serve_in_background(policy) as server:
        cmd = [sys.executable, "-m", "vla_sensor.bench.serving_bench", str(server.port), str(count), str(warmup),
               ",".join(views)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60 + 2 * (count + warmup))
        if done.returncode != 0:
            raise RuntimeError(f"serving benchmark client failed:\n{done.stderr[-2000:]}")
    samples = json.loads(done.stdout.strip().splitlines()[-1])
    parts = {k: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))} for k, v in samples.items()}
    return {
        "requests": count, "rate_hz": RATE_HZ, "views": list(views), "image_size": [224, 224], "sensor_rows": ROWS,
        "window_rows": policy.spec.window_size, "request_bytes": len(pack(encode_observation(first))),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "parts_ms": parts, "target_overhead_p99_ms": TARGET_OVERHEAD_P99_MS,
        "meets_target": parts["overhead_ms"]["p99"] <= TARGET_OVERHEAD_P99_MS,
    }


def measure_serving(quick: bool) -> dict[str, Any]:
    """1 and 2 views at 224x224, ``quick`` 40 or 300 requests each at 10 Hz, client in another process."""
    count = 40 if quick else 300
    return {"configs": [measure_views(VIEWS[:1], count), measure_views(VIEWS, count)]}


def format_serving_section(result: dict[str, Any]) -> str:
    """The benchmark report's policy-server section (markdown): one column pair per view set."""
    configs = result["configs"]
    c0 = configs[0]
    load = c0["load_average"]
    head = " | ".join(f"{len(c['views'])} view{'s' if len(c['views']) > 1 else ''} p50 | p99" for c in configs)
    lines = [
        "### Policy server",
        "",
        f"Client in another process over loopback, {c0['rate_hz']:.0f} Hz, tiny model (random weights), views "
        f"{c0['image_size'][0]}x{c0['image_size'][1]}, {c0['sensor_rows']} new sensor rows per request into a "
        f"{c0['window_rows']}-row window, {c0['requests']} requests per column, {c0['torch_threads']} torch "
        f"threads, load average {fmt.NA if load is None else f'{load:.1f}'}; request sizes "
        + ", ".join(fmt.nbytes(c["request_bytes"]) for c in configs) + ".",
        "",
        f"| part | {head} |",
        "|---|" + "---:|---:|" * len(configs),
    ]
    for k, label in PARTS.items():
        cells = " | ".join(f"{c['parts_ms'][k]['p50']:.2f} ms | {c['parts_ms'][k]['p99']:.2f} ms" for c in configs)
        lines.append(f"| {label} | {cells} |")
    lines.append("")
    for c in configs:
        verdict = "meets" if c["meets_target"] else "misses"
        lines.append(f"{len(c['views'])} view(s): overhead at p99 {c['parts_ms']['overhead_ms']['p99']:.2f} ms "
                     f"({verdict} ≤ {c['target_overhead_p99_ms']:.0f} ms).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the client process of measure_views: port count warmup views
    port, n, warm, names = sys.argv[1:5]
    print(json.dumps(_drive(int(port), int(n), int(warm), names.split(","))))
