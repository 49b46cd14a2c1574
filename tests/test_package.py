"""The original API's public names stay importable from the package root."""

import vla_sensor


def test_original_api_names_are_declared() -> None:
    for name in [
        "SensorEncoder",
        "QwenVLAWithSensor",
        "extract_sensor_window",
        "insertionMeca500DatasetWithSensor",
        "create_integrated_dataloader",
    ]:
        assert name in dir(vla_sensor)
