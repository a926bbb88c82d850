"""Type aliases shared across the package (annotations only; no runtime behaviour).

Named ``type_aliases`` rather than ``types`` so that running a file of this package
as a script can never shadow the standard library's ``types``.
"""

from __future__ import annotations

import os

PathLike = str | os.PathLike  # a file or folder path: str or pathlib.Path

__all__ = ["PathLike"]
