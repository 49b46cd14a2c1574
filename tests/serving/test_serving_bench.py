"""The benchmark's policy-server section renders every part with its p50/p99 and the verdict."""

from __future__ import annotations

from vla_sensor.bench.serving_bench import PARTS, format_serving_section


def test_format_serving_section_names_every_part_and_the_target() -> None:
    parts = {k: {"p50": 1.0 + i, "p99": 2.0 + i} for i, k in enumerate(PARTS)}
    two = {"requests": 40, "rate_hz": 10.0, "views": ["left", "oak"], "image_size": [224, 224], "sensor_rows": 65,
           "window_rows": 650, "request_bytes": 569_000, "torch_threads": 2, "load_average": None, "parts_ms": parts,
           "target_overhead_p99_ms": 5.0, "meets_target": False}
    one = {**two, "views": ["left"], "request_bytes": 419_000, "meets_target": True}
    text = format_serving_section({"configs": [one, two]})
    assert text.startswith("### Policy server") and "569 kB" in text and "419 kB" in text
    assert "1 view(s): overhead at p99 11.00 ms (meets" in text and "2 view(s): overhead at p99 11.00 ms (misses" in text
    assert all(label in text for label in PARTS.values())
