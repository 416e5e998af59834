#!/usr/bin/env python3
"""moto's S3 server (`python benchmarks/moto_ranged.py -H 127.0.0.1 -p PORT`), answering a single-range GET
by reading only that range from the stored object.

moto reads the whole object into memory for every GET and slices the range afterwards: 2 GB per request, and
a concurrent round of 64 ranged GETs on a 2 GB object would hold 128 GB. Requests and replies on the wire are
unchanged (same headers, same bytes), so what the client counts is what it would count against moto itself.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Any

from moto.s3.models import FakeKey
from moto.s3.responses import S3Response
from moto.server import main

_LOCAL = threading.local()
_SINGLE = re.compile(r"bytes=\d+-\d+$")
_value = FakeKey.value


class _Lazy:
    """The object's bytes, read by slice from moto's own buffer."""

    def __init__(self, key: Any) -> None:
        self.key = key

    def __len__(self) -> int:
        return int(self.key.size)

    def __getitem__(self, s: slice) -> bytes:
        start, stop, _ = s.indices(len(self))
        with self.key.lock:
            self.key._value_buffer.seek(start)
            return bytes(self.key._value_buffer.read(max(0, stop - start)))


def _lazy_value(self: Any) -> Any:
    return _Lazy(self) if getattr(_LOCAL, "lazy", False) else _value.fget(self)


_get_object = S3Response.get_object


def _ranged_get_object(self: Any) -> Any:
    _LOCAL.lazy = bool(_SINGLE.match(self.headers.get("range", "") or ""))
    try:
        return _get_object(self)
    finally:
        _LOCAL.lazy = False


FakeKey.value = property(_lazy_value, _value.fset)  # type: ignore[method-assign,assignment]
S3Response.get_object = _ranged_get_object  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])
