"""The two pieces of the onnx package the analyzer needs, without `import onnx`.

`import onnx` pulls numpy, the helper, checker and compose modules (~0.15 s); the analyzer only needs the
generated protobuf classes (onnx_ml_pb2) and the operator schema lookup of the C extension.

The protobuf module is loaded under a private name: its descriptors go to the default pool, where a later
`import onnx` finds the same file and hands back the same message classes. The C extension must keep its
own name (it cannot be initialised twice), so a later `import onnx` reuses it; it is bound on the package
whenever the package is there.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

_PB2 = "onnx.onnx_ml_pb2"
_PB2_PRIVATE = "_modelseal_onnx_ml_pb2"
_CEXT = "onnx.onnx_cpp2py_export"


def _load(name: str, filename_glob: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("onnx")  # top-level lookup: does not run onnx/__init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("onnx is not installed")
    base = Path(next(iter(spec.submodule_search_locations)))
    path = next(iter(sorted(base.glob(filename_glob))), None)
    sub = importlib.util.spec_from_file_location(name, path) if path is not None else None
    if sub is None or sub.loader is None:
        raise ImportError(f"{name} not found in {base}")
    module = importlib.util.module_from_spec(sub)
    sys.modules[name] = module
    try:
        sub.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def pb2() -> ModuleType:
    """onnx.onnx_ml_pb2 (ModelProto, TensorProto ...)."""
    if _PB2 in sys.modules:
        return sys.modules[_PB2]
    try:
        return _load(_PB2_PRIVATE, "onnx_ml_pb2.py")
    except (ImportError, OSError):
        import onnx.onnx_ml_pb2 as mod

        return mod


def has_schema(op: str, domain: str) -> bool:
    """onnx.defs.has(op, domain)."""
    try:
        cext = _load(_CEXT, "onnx_cpp2py_export*.so")
        parent = sys.modules.get("onnx")
        if parent is not None and getattr(parent, "onnx_cpp2py_export", None) is not cext:
            parent.onnx_cpp2py_export = cext  # type: ignore[attr-defined]
        return bool(cext.defs.has_schema(op, domain))
    except (ImportError, OSError, AttributeError):
        from onnx import defs

        return bool(defs.has(op, domain))
