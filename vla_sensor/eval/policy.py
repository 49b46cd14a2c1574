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
from vla_sensor.models.vision import PatchBuffers, QwenSampleTransform, smart_resize


class InputBuffers:
    """One session's reused pre-processing storage: the padded sensor window and the pixel patches.

    Allocated (and every page touched) once, when the session starts, so a request writes into warm
    memory instead of fresh pages (by default glibc gives an array over 128 KiB fresh ``mmap``'d
    memory, faulted in page by page). A batch built in them (or sharing the sensor ring's rows) is valid
    until the session's next one.
    """

    def __init__(self, loaded: LoadedPolicy) -> None:
        self.window = np.zeros((loaded.spec.window_size, loaded.channels), np.float32)
        self.patches: PatchBuffers | None = None
        size = loaded.image_size
        if isinstance(loaded.transform, QwenSampleTransform) and size is not None and loaded.views and (
                smart_resize(*size, loaded.transform.settings) == tuple(size)):
            self.patches = loaded.transform.patchifier.buffers(len(loaded.views), *size)
        self._prompt: tuple[str, list[list[int]], torch.Tensor] | None = None  # the last prompt's ids

    def prompt_ids(self, transform: QwenSampleTransform, grids: torch.Tensor, instruction: str) -> torch.Tensor:
        """The transform's prompt ids (a new tensor each call), built once per instruction and image grid."""
        key = grids.tolist()
        if self._prompt is None or self._prompt[0] != instruction or self._prompt[1] != key:
            ids = torch.tensor(transform.build_input_ids(grids, instruction), dtype=torch.long)
            self._prompt = (instruction, key, ids)
        return self._prompt[2].clone()


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

    def batch(self, obs: Observation, stream: LiveSensorStream, buffers: InputBuffers | None = None
              ) -> dict[str, Any]:
        """The one-sample batch of ``obs`` (appended to ``stream``), built as the dataset and loader do.

        With ``buffers``, its ``sensor_data`` and ``pixel_values`` are views of them (the same values,
        no per-request allocation), overwritten by the next batch built in them."""
        validate_observation(obs, views=self.views, channels=self.channels, state_dim=self.state_dim)
        stream.append(obs["sensor"]["timestamps"], obs["sensor"]["values"])
        window, length = (stream.window(self.spec) if buffers is None else
                          stream.window(self.spec, out=buffers.window, share=True))
        frames = [resize_array(obs["images"][v], self.image_size) for v in self.views]
        if buffers is not None and buffers.patches is not None:
            return self._batch_in(buffers, frames, window, length, obs)
        images = np.stack(frames)
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

    def _batch_in(self, buffers: InputBuffers, frames: list[np.ndarray], window: np.ndarray, length: int,
                  obs: Observation) -> dict[str, Any]:
        """:meth:`batch`'s result with the pixels patched straight from the (H, W, 3) frames into the
        buffers and the window used in place: the transform's and the collate's fields for one sample
        (their equality is tested), without their copies or their per-call overhead."""
        transform = self.transform
        assert isinstance(transform, QwenSampleTransform) and buffers.patches is not None
        pixel_values, grids = transform.patchifier([f.transpose(2, 0, 1) for f in frames], buffers.patches)
        ids = buffers.prompt_ids(transform, grids, obs["instruction"] or transform.prompt.default_instruction)
        batch: dict[str, Any] = {
            "pixel_values": pixel_values, "image_grid_thw": grids,
            "input_ids": ids[None], "attention_mask": torch.ones((1, ids.shape[0]), dtype=ids.dtype),
            "sensor_data": torch.from_numpy(window)[None],
            "sensor_lengths": torch.tensor([int(length)], dtype=torch.int64),
            "has_sensor_mask": torch.tensor([True]), "instruction": [obs["instruction"]],
        }
        if self.state_dim:
            batch["state"] = torch.from_numpy(obs["state"].copy())[None]
        return batch

    @torch.no_grad()
    def forward(self, batch: dict[str, Any]) -> np.ndarray:
        """The action chunk (horizon, A) float32 in robot units of a one-sample batch."""
        return self.model.predict_action(batch)[0].float().cpu().numpy()


class PolicySession:
    """One episode's state (the sensor stream) acting with a shared :class:`LoadedPolicy`."""

    def __init__(self, loaded: LoadedPolicy) -> None:
        self.loaded = loaded
        # a window of the run's size lies in one piece of the ring: the model reads it there, uncopied
        self.stream = LiveSensorStream(loaded.channels, mirror=loaded.spec.window_size)
        self.buffers = InputBuffers(loaded)

    def reset(self) -> None:
        self.stream.reset()

    def batch(self, obs: Observation) -> dict[str, Any]:
        """The one-sample batch of ``obs``, built as the dataset and the loader build a training batch
        (tensors of its own: kept batches stay as they were)."""
        return self.loaded.batch(obs, self.stream)

    def batch_in_buffers(self, obs: Observation) -> dict[str, Any]:
        """:meth:`batch` with its pixels and sensor window in this session's reused buffers: valid
        until the session's next ``batch_in_buffers`` (the server and :meth:`predict` use it at once)."""
        return self.loaded.batch(obs, self.stream, self.buffers)

    def predict(self, obs: Observation) -> np.ndarray:
        """The action chunk (horizon, A) float32 in robot units."""
        return self.loaded.forward(self.batch_in_buffers(obs))


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
