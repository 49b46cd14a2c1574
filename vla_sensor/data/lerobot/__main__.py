"""``python -m vla_sensor.data.lerobot import SRC OUT`` and ``... export SRC OUT --fps 10 [--video]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vla_sensor.data.errors import DataFormatError


def _split(text: str | None) -> list[tuple[str, int]] | None:
    if not text:
        return None
    out = []
    for part in text.split(","):
        key, _, width = part.partition("=")
        out.append((key.strip(), int(width)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vla_sensor.data.lerobot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="LeRobot v3.0 dataset -> native trajectory directories")
    imp.add_argument("src")
    imp.add_argument("out")
    imp.add_argument("--sensor-features", nargs="*", default=["observation.sensor"],
                     help="features concatenated into the sensor stream (none: no sensor)")
    imp.add_argument("--image-features", nargs="*", default=None, help="views (default: every image/video feature)")
    imp.add_argument("--action-feature", default="action")
    imp.add_argument("--state-feature", default="observation.state",
                     help="the robot state feature, written as states in actions.npz (read when present)")
    imp.add_argument("--channel-split", default=None,
                     help="native channel keys and widths, e.g. forces=1,alines=1025 (the default for 1026 channels)")
    exp = sub.add_parser("export", help="native trajectory directories -> LeRobot v3.0 dataset")
    exp.add_argument("src")
    exp.add_argument("out")
    exp.add_argument("--fps", type=float, default=10.0, help="frame rate = the action rate of the recordings")
    exp.add_argument("--video", action="store_true", help="store views as MP4 (AV1) instead of image bytes")
    exp.add_argument("--vcodec", default="libsvtav1")
    exp.add_argument("--samples-per-frame", type=int, default=None, help="k of the (k, C) sensor feature "
                     "(default: round(sensor rate / fps))")
    exp.add_argument("--sensor-feature", default="observation.sensor")
    exp.add_argument("--state-feature", default="observation.state", help="feature of the native states")
    exp.add_argument("--channel-keys", nargs="*", default=["forces", "alines"], help="native sensor.npz keys")
    exp.add_argument("--robot-type", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "import":
            from vla_sensor.data.lerobot.importer import import_dataset
            from vla_sensor.data.lerobot.reader import LeRobotReader

            reader = LeRobotReader(sensor_features=args.sensor_features, image_features=args.image_features,
                                   action_feature=args.action_feature, state_feature=args.state_feature)
            import_dataset(args.src, args.out, reader, _split(args.channel_split))
        else:
            from vla_sensor.data.format import TrajectoryReader
            from vla_sensor.data.lerobot.export import ExportSettings, export_dataset

            settings = ExportSettings(fps=args.fps, video=args.video, vcodec=args.vcodec,
                                      samples_per_frame=args.samples_per_frame, sensor_feature=args.sensor_feature,
                                      state_feature=args.state_feature, robot_type=args.robot_type)
            export_dataset(args.src, args.out, settings, TrajectoryReader(channel_keys=args.channel_keys,
                                                                          expected_channels=None))
    except DataFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
