"""Storage codecs: float32 exact, float16 and int8 within their stated bounds."""

from __future__ import annotations

import numpy as np
import pytest

from vla_sensor.data.errors import DataFormatError
from vla_sensor.data.storage import decode_slice, encode_stream, max_abs_error_bound


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_decode_is_within_the_stated_bound(dtype: str) -> None:
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(500, 40)) * rng.uniform(0.01, 100, 40)).astype(np.float32)
    x[:, 3] = 7.0  # a constant channel
    enc = encode_stream(x, dtype)
    y = decode_slice(enc.data[100:300], enc.dtype, enc.scale, enc.offset)
    assert y.dtype == np.float32
    err = np.abs(y - x[100:300])
    assert (err <= max_abs_error_bound(x[100:300], enc)).all()
    if dtype == "float32":
        assert np.array_equal(y, x[100:300])
    assert enc.nbytes <= x.nbytes * {"float32": 1.0, "float16": 0.5, "int8": 0.26}[dtype] + 2 * 4 * 40


def test_float16_overflow_is_an_error() -> None:
    with pytest.raises(DataFormatError, match="float16"):
        encode_stream(np.full((2, 2), 1e6, np.float32), "float16", source="big.npz")
