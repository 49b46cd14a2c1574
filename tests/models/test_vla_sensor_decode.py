"""The model decodes stored float16/int8 sensor batches at the start of its sensor path."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from vla_sensor.data.sensor_decode import decode_sensor_batch
from vla_sensor.models.vla import QwenVLAWithSensor


def test_sensor_inputs_decode_int8_batches() -> None:
    torch.manual_seed(0)
    q = torch.randint(-127, 128, (2, 5, 4), dtype=torch.int8)
    batch = {
        "sensor_data": q,
        "sensor_scale": torch.rand(2, 4) + 0.1,
        "sensor_offset": torch.randn(2, 4),
        "sensor_lengths": torch.tensor([5, 3]),
        "has_sensor_mask": torch.tensor([True, True]),
    }
    stub = SimpleNamespace(device=torch.device("cpu"), sensor_encoder=SimpleNamespace(input_channels=4))
    data, lengths, has = QwenVLAWithSensor._sensor_inputs(stub, batch, 2)
    want = q.float() * batch["sensor_scale"][:, None] + batch["sensor_offset"][:, None]
    want[1, :2] = 0  # padding rows
    assert data.dtype == torch.float32 and torch.allclose(data, want, atol=1e-6)
    assert lengths.tolist() == [5, 3] and has.all()
    f32 = decode_sensor_batch({**batch, "sensor_data": want, "sensor_scale": None})
    assert torch.equal(QwenVLAWithSensor._sensor_inputs(stub, f32, 2)[0], want)
