"""Reading parquet columns for a row range, and turning LeRobot's list columns into numpy arrays.

Only the row groups overlapping the requested rows and only the requested columns are read, so
loading one episode's sensor feature from a file that holds many episodes touches its rows alone.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vla_sensor.data.errors import DataFormatError


def _corrupt(path: Path, exc: Exception) -> DataFormatError:
    return DataFormatError(f"{path}: corrupt or truncated parquet file ({exc}); expected a readable parquet file")


def read_table(path: str | os.PathLike[str], columns: Sequence[str] | None = None) -> pa.Table:
    """The whole table (or ``columns``) of a small file, e.g. a metadata table."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: missing parquet file")
    try:
        return pq.read_table(path, columns=None if columns is None else list(columns))
    except (pa.ArrowException, OSError) as exc:
        raise _corrupt(path, exc) from exc


@functools.lru_cache(maxsize=64)
def _file_index(path: Path, mtime_ns: int) -> tuple[np.ndarray, pq.FileMetaData]:
    """The ``index`` column (global frame index of every row) and the footer of a data file."""
    try:
        pf = pq.ParquetFile(path)
        if "index" not in pf.schema_arrow.names:
            raise DataFormatError(f"{path}: missing column 'index'; expected a LeRobot v3.0 data file")
        return pf.read(columns=["index"]).column("index").to_numpy(), pf.metadata
    except (pa.ArrowException, OSError) as exc:
        raise _corrupt(path, exc) from exc


class DataFile:
    """One ``data/chunk-XXX/file-XXX.parquet``: column names, and rows of a global index range."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise DataFormatError(f"{path}: missing data file; expected the parquet file the episodes table names")
        self.index, self.metadata = _file_index(path, path.stat().st_mtime_ns)
        self.schema = self.metadata.schema.to_arrow_schema()

    def rows_of(self, start: int, stop: int, what: str) -> tuple[int, int]:
        """File rows ``[a, b)`` holding global frames ``start..stop-1`` (consecutive), or an error."""
        a = int(np.searchsorted(self.index, start))
        b = a + (stop - start)
        if a >= len(self.index) or b > len(self.index) or self.index[a] != start or self.index[b - 1] != stop - 1:
            span = f"{self.index[0]}..{self.index[-1] + 1}" if len(self.index) else "no rows"
            raise DataFormatError(
                f"{self.path}: {what}: row range {start}..{stop} out of bounds; the file holds frames {span}"
            )
        return a, b

    def read(self, columns: Sequence[str], a: int, b: int) -> pa.Table:
        """Columns of file rows ``[a, b)``, reading only the row groups that overlap them."""
        groups, first, offset = [], None, 0
        for g in range(self.metadata.num_row_groups):
            n = self.metadata.row_group(g).num_rows
            if offset < b and offset + n > a:
                groups.append(g)
                first = offset if first is None else first
            offset += n
        try:
            table = pq.ParquetFile(self.path).read_row_groups(groups, columns=list(columns))
        except (pa.ArrowException, OSError) as exc:
            raise _corrupt(self.path, exc) from exc
        return table.slice(a - (first or 0), b - a)


def column_array(table: pa.Table, key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """(rows, *shape) numpy array of a scalar, fixed-size-list or nested-list column, checked."""
    col = table.column(key)
    if col.null_count:
        raise DataFormatError(f"{where}: {col.null_count} null values; expected one {shape} value per frame")
    arr: Any = col.combine_chunks()
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    rows = len(arr)
    depth = 0
    while pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type) or pa.types.is_fixed_size_list(arr.type):
        if arr.null_count:
            raise DataFormatError(f"{where}: null entries inside the list values; expected {shape} per frame")
        if not pa.types.is_fixed_size_list(arr.type) and depth < len(shape):
            lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
            if lengths.size and (lengths != shape[depth]).any():
                bad = int(np.flatnonzero(lengths != shape[depth])[0])
                raise DataFormatError(
                    f"{where}: entry {bad} has {lengths[bad]} values along axis {depth}; info.json declares {shape}"
                )
        arr = arr.flatten()
        depth += 1
    if depth != (0 if shape == (1,) else len(shape)):
        raise DataFormatError(f"{where}: stored with {depth} list levels, but info.json declares shape {shape}")
    if not (pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_boolean(arr.type)):
        raise DataFormatError(f"{where}: expected numbers (int or float), got {arr.type}")
    values = arr.to_numpy(zero_copy_only=False)
    if values.size != rows * int(np.prod(shape)):
        raise DataFormatError(
            f"{where}: {values.size} values in {rows} frames; expected shape {shape} per frame "
            f"({rows * int(np.prod(shape))} values)"
        )
    return values.reshape((rows, *shape)) if shape != (1,) else values
