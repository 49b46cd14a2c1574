"""A trained run as a :class:`~vla_sensor.data.observation.Policy`: observations in, action chunks out.

Every piece of pre-processing is the dataset's own: the sensor window is cut by
:class:`~vla_sensor.data.live.LiveSensorStream` with the run's window settings, the camera images are
resized with :func:`~vla_sensor.data.images.resize_array` (the dataset's ``resize_image``; an image
already at the run's size is used as is), the model's
input transform and :func:`~vla_sensor.data.collate.collate_samples` build the batch, and a policy
trained with a proprioceptive state gets the observation's ``state`` as the sample's ``state`` (robot
units; the model normalises it with the training split's statistics). What the policy sees in closed
loop is what it was trained on.

The loaded model (:class:`LoadedPolicy`) is separate from the episode's state (:class:`PolicySession`,
one sensor stream), so one model in memory can serve many robots or simulator clients at once, each
through its own session, all through this one pre-processing path. :class:`RunPolicy` is the
single-session form the in-process evaluation uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from vla_sensor.data.collate import collate_samples
from vla_sensor.data.dataset import model_inputs
from vla_sensor.data.images import resize_array
from vla_sensor.data.live import LiveSensorStream
from vla_sensor.data.observation import Observation, validate_observation
from vla_sensor.data.windows import SENSOR_CHANNELS, WindowSpec


class LoadedPolicy:
    """A model and the run's input settings, shared by every session that acts with it."""

    def __init__(self, model: torch.nn.Module, data: DictConfig, device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.spec = WindowSpec.of(data)
        self.views = list(model.view_selection or [])
        size = model.image_size
        self.image_size = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        self.transform = model.build_sample_transform(self.views, self.image_size)
        encoder = getattr(model, "sensor_encoder", None)
        self.channels = int(encoder.input_channels) if encoder is not None else SENSOR_CHANNELS
        # S of the proprioceptive state the model was trained with (0: none; obs["state"] is then ignored)
        self.state_dim = int(getattr(model, "state_dim", 0) or 0)

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str | None = None, device: str | torch.device = "cpu"
                 ) -> LoadedPolicy:
        """The run's ``final/`` export (or ``checkpoint``, a ``save_pretrained`` directory)."""
        from vla_sensor.eval.run import EXPORT_CONFIG_FILE, RunLoadError, load_run_config, resolve_weights
        from vla_sensor.models.vla import QwenVLAWithSensor

        cfg = load_run_config(Path(run_dir))
        weights = resolve_weights(Path(run_dir), checkpoint)
        if not (weights / EXPORT_CONFIG_FILE).is_file():
            raise RunLoadError(f"{weights}: a policy needs an exported model ({EXPORT_CONFIG_FILE}); "
                               "use the run's final/ export")
        return cls(QwenVLAWithSensor.from_pretrained(weights), cfg.data, device)

    @property
    def horizon(self) -> int:
        return int(self.model.horizon)

    @property
    def action_dim(self) -> int:
        return int(self.model.action_dim)

    def new_session(self) -> PolicySession:
        """A fresh episode state (its own sensor stream) acting with this model."""
        return PolicySession(self)

    def batch(self, obs: Observation, stream: LiveSensorStream) -> dict[str, Any]:
        """The one-sample batch of ``obs`` (appended to ``stream``), built as the dataset and loader do."""
        validate_observation(obs, views=self.views, channels=self.channels, state_dim=self.state_dim)
        stream.append(obs["sensor"]["timestamps"], obs["sensor"]["values"])
        window, length = stream.window(self.spec)
        images = np.stack([resize_array(obs["images"][v], self.image_size) for v in self.views])
        sample = {
            **model_inputs(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), obs["instruction"], self.transform),
            "sensor_data": torch.from_numpy(np.ascontiguousarray(window)),
            "sensor_length": int(length),
            "has_sensor": True,
            "instruction": obs["instruction"],
        }
        if self.state_dim:
            sample["state"] = torch.from_numpy(obs["state"].copy())
        return collate_samples([sample])

    @torch.no_grad()
    def forward(self, batch: dict[str, Any]) -> np.ndarray:
        """The action chunk (horizon, A) float32 in robot units of a one-sample batch."""
        return self.model.predict_action(batch)[0].float().cpu().numpy()


class PolicySession:
    """One episode's state (the sensor stream) acting with a shared :class:`LoadedPolicy`."""

    def __init__(self, loaded: LoadedPolicy) -> None:
        self.loaded = loaded
        self.stream = LiveSensorStream(loaded.channels)

    def reset(self) -> None:
        self.stream.reset()

    def batch(self, obs: Observation) -> dict[str, Any]:
        """The one-sample batch of ``obs``, built as the dataset and the loader build a training batch."""
        return self.loaded.batch(obs, self.stream)

    def predict(self, obs: Observation) -> np.ndarray:
        """The action chunk (horizon, A) float32 in robot units."""
        return self.loaded.forward(self.batch(obs))


class RunPolicy(PolicySession):
    """The exported policy of a training run, acting on a stream of observations (one episode at a time)."""

    def __init__(self, model: torch.nn.Module | LoadedPolicy, data: DictConfig | None = None,
                 device: str | torch.device = "cpu") -> None:
        if not isinstance(model, LoadedPolicy):
            if data is None:
                raise ValueError("data: a model needs the run's data settings (sensor window, image size)")
            model = LoadedPolicy(model, data, device)
        super().__init__(model)

    @classmethod
    def from_run(cls, run_dir: str | Path, checkpoint: str | None = None, device: str | torch.device = "cpu"
                 ) -> RunPolicy:
        """The run's ``final/`` export (or ``checkpoint``, a ``save_pretrained`` directory)."""
        return cls(LoadedPolicy.from_run(run_dir, checkpoint, device))

    def __getattr__(self, name: str) -> Any:
        """The shared model's settings (``model``, ``views``, ``spec``, ``transform``, ``channels``, ...)."""
        if name == "loaded":  # not set yet: no recursion during construction
            raise AttributeError(name)
        return getattr(self.loaded, name)
