"""A trained run as a :class:`~vla_sensor.data.observation.Policy`: observations in, action chunks out.

Every piece of pre-processing is the dataset's own: the sensor window is cut by
:class:`~vla_sensor.data.live.LiveSensorStream` with the run's window settings, the camera images are
resized with :func:`~vla_sensor.data.images.resize_image` to the run's image size, the model's
input transform and :func:`~vla_sensor.data.collate.collate_samples` build the batch. What the policy
sees in closed loop is what it was trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from vla_sensor.data.collate import collate_samples
from vla_sensor.data.dataset import model_inputs
from vla_sensor.data.images import resize_image
from vla_sensor.data.live import LiveSensorStream
from vla_sensor.data.observation import Observation, validate_observation
from vla_sensor.data.windows import SENSOR_CHANNELS, WindowSpec


class RunPolicy:
    """The exported policy of a training run, acting on a stream of observations (one episode at a time)."""

    def __init__(self, model: torch.nn.Module, data: DictConfig, device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.spec = WindowSpec(int(data.sensor_window_size), data.sensor_window_seconds, bool(data.adaptive_window))
        self.views = list(model.view_selection or [])
        size = model.image_size
        self.image_size = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        self.transform = model.build_sample_transform(self.views, self.image_size)
        encoder = getattr(model, "sensor_encoder", None)
        self.channels = int(encoder.input_channels) if encoder is not None else SENSOR_CHANNELS
        self.stream = LiveSensorStream(self.channels)

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str | None = None, device: str | torch.device = "cpu"
                 ) -> RunPolicy:
        """The run's ``final/`` export (or ``checkpoint``, a ``save_pretrained`` directory)."""
        from vla_sensor.eval.run import EXPORT_CONFIG_FILE, RunLoadError, load_run_config, resolve_weights
        from vla_sensor.models.vla import QwenVLAWithSensor

        cfg = load_run_config(Path(run_dir))
        weights = resolve_weights(Path(run_dir), checkpoint)
        if not (weights / EXPORT_CONFIG_FILE).is_file():
            raise RunLoadError(f"{weights}: a policy needs an exported model ({EXPORT_CONFIG_FILE}); "
                               "use the run's final/ export")
        return cls(QwenVLAWithSensor.from_pretrained(weights), cfg.data, device)

    def reset(self) -> None:
        self.stream.reset()

    def batch(self, obs: Observation) -> dict[str, Any]:
        """The one-sample batch of ``obs``, built as the dataset and the loader build a training batch."""
        validate_observation(obs, views=self.views, channels=self.channels)
        self.stream.append(obs["sensor"]["timestamps"], obs["sensor"]["values"])
        window, length = self.stream.window(self.spec)
        images = np.stack([resize_image(Image.fromarray(obs["images"][v]), self.image_size) for v in self.views])
        sample = {
            **model_inputs(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), obs["instruction"], self.transform),
            "sensor_data": torch.from_numpy(np.ascontiguousarray(window)),
            "sensor_length": int(length),
            "has_sensor": True,
            "instruction": obs["instruction"],
        }
        return collate_samples([sample])

    @torch.no_grad()
    def predict(self, obs: Observation) -> np.ndarray:
        """The action chunk (horizon, A) float32 in robot units."""
        return self.model.predict_action(self.batch(obs))[0].float().cpu().numpy()
