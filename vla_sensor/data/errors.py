"""The one exception type for bad on-disk data or bad data settings.

It subclasses ``ValueError`` so callers that already catch ``ValueError`` keep working; every
message names the file or key at fault and what was expected, so a user can fix the data without
reading the code.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DataFormatError(ValueError):
    """A trajectory directory, file, key or data setting is not what the reader expects."""


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """Return ' (did you mean: a, b?)' for close matches of ``name``, or '' when there are none."""
    close = difflib.get_close_matches(name, sorted(set(candidates)), n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
