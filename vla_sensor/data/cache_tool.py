"""List and clean an on-disk cache directory: the only place cache files are ever deleted.

Builds never delete files of another key, so caches of every dtype and setting coexist in one
``cache_dir`` and switching back to a setting reuses its cache. Stale files go only when asked::

    python -m vla_sensor.data.cache_tool list  [--cache-dir DIR]
    python -m vla_sensor.data.cache_tool clean [--cache-dir DIR] [--max-bytes 20G] [--dry-run]

``clean`` removes: temp files of builders that are no longer running, arrays without a complete
sidecar, sensor caches whose source files are gone or changed (size or mtime), caches of a
trajectory whose directory is gone, and older versions superseded by a newer cache of the same
trajectory with the same dtype and shape (e.g. built again after the source changed). With
``--max-bytes`` it then removes the least recently built caches until the directory fits. Lock files
of removed caches go too, unless a process holds them.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_sensor.data.cache import default_cache_dir

_TMP = re.compile(r"\.tmp(\d+)\.(npy|json)$")
_KEYED = re.compile(r"^(?P<prefix>.+-)(?P<key>[0-9a-f]{24})\.npy$")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass
class Entry:
    """One cache array and its sidecar."""

    npy: Path
    meta: dict[str, Any] | None
    nbytes: int
    built: float  # sidecar mtime (when the build completed)
    reasons: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        m = _KEYED.match(self.npy.name)
        return str(self.npy.parent / (m.group("prefix") if m else self.npy.stem))

    def files(self) -> list[Path]:
        return [p for p in (self.npy, self.npy.with_suffix(".json")) if p.exists()]


def parse_size(text: str) -> int:
    """``20G``, ``512M``, ``1000000`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"expected a size such as 20G, 512M or 1000000, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def scan(cache_dir: Path) -> tuple[list[Entry], list[Path]]:
    """Every cache array under ``cache_dir`` (with why it is stale, if it is) and dead builders' temp files."""
    entries, temps = [], []
    for path in sorted(cache_dir.rglob("*")):
        if not path.is_file():
            continue
        tmp = _TMP.search(path.name)
        if tmp:
            if not _alive(int(tmp.group(1))):
                temps.append(path)
            continue
        if path.suffix != ".npy":
            continue
        sidecar = path.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text())
            built = sidecar.stat().st_mtime
        except (OSError, ValueError):
            meta, built = None, path.stat().st_mtime
        entry = Entry(path, meta, path.stat().st_size, built)
        if meta is None or meta.get("file_size") != entry.nbytes or "block_crc32" not in meta:
            entry.reasons.append("incomplete or from an older cache format")
        else:
            entry.reasons += _source_changes(meta)
        entries.append(entry)
    _mark_superseded(entries)
    return entries, temps


def _source_changes(meta: dict[str, Any]) -> list[str]:
    out = []
    for src in meta.get("sources") or []:
        p, size, mtime = Path(src[0]), src[1], src[2]
        try:
            st = p.stat()
        except OSError:
            out.append(f"source {p} is gone")
            continue
        if st.st_size != size or st.st_mtime_ns != mtime:
            out.append(f"source {p} changed")
    src = meta.get("source")
    if not meta.get("sources") and src and "," not in src and not Path(src).exists():
        out.append(f"source {src} is gone")
    return out


def _mark_superseded(entries: list[Entry]) -> None:
    groups: dict[tuple[Any, ...], list[Entry]] = {}
    for e in entries:
        if e.meta is not None and not e.reasons:
            shape = tuple(e.meta.get("shape", [])[1:])
            groups.setdefault((e.prefix, e.meta.get("dtype"), shape, e.meta.get("view")), []).append(e)
    for group in groups.values():
        group.sort(key=lambda e: e.built)
        for old in group[:-1]:
            old.reasons.append(f"superseded by {group[-1].npy.name}")


def _remove(paths: Sequence[Path], dry_run: bool) -> int:
    freed = 0
    for p in paths:
        try:
            size = p.stat().st_size
            if not dry_run:
                p.unlink()
            freed += size
        except FileNotFoundError:
            pass
    return freed


def _unused_locks(cache_dir: Path, dry_run: bool) -> list[Path]:
    out = []
    for lock in cache_dir.rglob("*lock"):
        prefix = lock.name[: -len("lock")]
        if any(p.suffix == ".npy" for p in lock.parent.glob(f"{prefix}*")):
            continue
        try:
            with open(lock, "a+b") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held: a build is running
                fcntl.flock(f, fcntl.LOCK_UN)
        except OSError:
            continue
        out.append(lock)
    return out


def clean(cache_dir: Path, max_bytes: int | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Remove stale files (and, with ``max_bytes``, the least recently built caches); returns what went."""
    entries, temps = scan(cache_dir)
    removed: list[tuple[Path, str]] = [(p, "temp file of a builder that is not running") for p in temps]
    freed = _remove(temps, dry_run)
    keep = []
    for e in entries:
        if e.reasons:
            removed.append((e.npy, "; ".join(e.reasons)))
            freed += _remove(e.files(), dry_run)
        else:
            keep.append(e)
    if max_bytes is not None:
        total = sum(e.nbytes for e in keep)
        for e in sorted(keep, key=lambda e: e.built):
            if total <= max_bytes:
                break
            removed.append((e.npy, f"over the size budget of {max_bytes} bytes"))
            freed += _remove(e.files(), dry_run)
            total -= e.nbytes
    locks = _unused_locks(cache_dir, dry_run)
    _remove(locks, dry_run)
    return {"removed": [(str(p), why) for p, why in removed], "freed_bytes": freed, "locks": len(locks)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["list", "clean"])
    p.add_argument("--cache-dir", type=Path, default=None, help="default: $VLA_SENSOR_CACHE_DIR or ~/.cache/vla_sensor")
    p.add_argument("--max-bytes", type=parse_size, default=None, help="clean: then keep at most this much (e.g. 20G)")
    p.add_argument("--dry-run", action="store_true", help="clean: say what would go, delete nothing")
    a = p.parse_args(argv)
    cache_dir = a.cache_dir or default_cache_dir()
    if not cache_dir.is_dir():
        print(f"cache directory {cache_dir} does not exist")
        return 1
    if a.command == "list":
        entries, temps = scan(cache_dir)
        for e in entries:
            state = "stale: " + "; ".join(e.reasons) if e.reasons else "ok"
            print(f"{e.nbytes / 1e6:10.1f} MB  {e.npy.relative_to(cache_dir)}  {state}")
        for t in temps:
            print(f"{t.stat().st_size / 1e6:10.1f} MB  {t.relative_to(cache_dir)}  stale: temp file of a dead builder")
        print(f"{sum(e.nbytes for e in entries) / 1e6:.1f} MB in {len(entries)} caches")
        return 0
    out = clean(cache_dir, a.max_bytes, a.dry_run)
    verb = "would remove" if a.dry_run else "removed"
    for path, why in out["removed"]:
        print(f"{verb} {path}: {why}")
    print(f"{verb} {len(out['removed'])} files, {out['freed_bytes'] / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
