"""Serving a trained policy to a robot over websockets (``python serve.py run_dir=<run>``).

:class:`PolicyClient` is the robot side; the server is :mod:`vla_sensor.serving.server`, the message
schema :mod:`vla_sensor.serving.protocol` (documented in docs/serving.md).
"""

from vla_sensor.serving.client import PolicyClient, ServingError

__all__ = ["PolicyClient", "ServingError"]
