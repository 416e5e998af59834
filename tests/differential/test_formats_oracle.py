"""Real loaders against the Keras 2 / Flax / MXNet / llamafile fixtures, next to modelseal's verdict.

Each loader runs in a child process with a CPU and address-space cap, a private working directory and a
minimal environment; the hostile fixtures' payloads only write a canary under /tmp. The interpreters come
from the environment (the tests skip without them; nothing is downloaded):

    MODELSEAL_TFKERAS_PYTHON   python with tensorflow + tf_keras  (MODELSEAL_TFKERAS_PYTHONPATH: extra path)
    MODELSEAL_FLAX_PYTHON      python with flax (and msgpack-numpy for its case)
    MODELSEAL_MXNET_PYTHON     python with mxnet 1.9.1

On this machine: /work/venvs/tf/bin/python + /work/venvs/s3tfk, /work/venvs/s3fmt/bin/python,
/work/venvs/s3mx/bin/python. The llamafile case needs only `sh`.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import FIXTURES, rule_ids, scan_path  # noqa: E402
from scanner.findings import Verdict  # noqa: E402


def _python(var: str) -> str:
    python = os.environ.get(var)
    if not python or not Path(python).exists():
        pytest.skip(f"{var} not set")
    return python


def _limits(memory: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (300, 300))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    os.setsid()


def _run(argv: list[str], cwd: Path, *, memory: int = 4 << 30, pythonpath: str = "") -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                       preexec_fn=lambda: _limits(memory))  # noqa: PLW1509 - the child only sets limits
    return r.stdout + r.stderr[-2000:]


def _canary(path: str) -> Path:
    p = Path(path)
    p.unlink(missing_ok=True)
    return p


KERAS_LOAD = """
import sys, tf_keras
tf_keras.models.load_model(sys.argv[1])
print("LOADED")
"""


def test_keras2_lambda_runs_under_load_model_and_is_flagged(tmp_path: Path) -> None:
    python = _python("MODELSEAL_TFKERAS_PYTHON")
    canary = _canary("/tmp/modelseal-keras2-canary")
    model = tmp_path / "model"
    shutil.copytree(FIXTURES / "hostile" / "tensorflow" / "keras2_lambda", model)
    out = _run([python, "-c", KERAS_LOAD, str(model)], tmp_path, memory=16 << 30,
               pythonpath=os.environ.get("MODELSEAL_TFKERAS_PYTHONPATH", ""))
    assert "LOADED" in out and canary.exists(), out
    canary.unlink()
    report = scan_path(model / "keras_metadata.pb")
    assert report.verdict is Verdict.MALICIOUS and "KERAS-LAMBDA" in rule_ids(report.findings)


FLAX_RESTORE = """
import sys
from flax import serialization
try:
    tree = serialization.msgpack_restore(open(sys.argv[1], "rb").read())
    print("RESTORED", sorted(tree))
except Exception as e:
    print("REFUSED", type(e).__name__, e)
"""

MSGPACK_NUMPY = """
import sys, msgpack_numpy
msgpack_numpy.unpackb(open(sys.argv[1], "rb").read())
print("UNPACKED")
"""


def test_flax_loader_outcomes_match_the_scan(tmp_path: Path) -> None:
    python = _python("MODELSEAL_FLAX_PYTHON")
    benign = FIXTURES / "benign" / "flax" / "train_state_chunked.msgpack"
    assert "RESTORED" in _run([python, "-c", FLAX_RESTORE, str(benign)], tmp_path)
    assert scan_path(benign).verdict is Verdict.CLEAN
    obj = FIXTURES / "hostile" / "flax" / "object_dtype.msgpack"
    assert "REFUSED ValueError cannot create an OBJECT array" in _run([python, "-c", FLAX_RESTORE, str(obj)], tmp_path)
    assert "FLAX-OBJECT-DTYPE" in rule_ids(scan_path(obj).findings)
    # flax keeps the pickle leaf as bytes (nothing runs); the scan flags what unpickling it would do
    leaf = FIXTURES / "hostile" / "flax" / "pickle_leaf.msgpack"
    assert "RESTORED" in _run([python, "-c", FLAX_RESTORE, str(leaf)], tmp_path)
    assert scan_path(leaf).verdict is Verdict.MALICIOUS


def test_msgpack_numpy_object_array_runs_its_pickle(tmp_path: Path) -> None:
    python = _python("MODELSEAL_FLAX_PYTHON")
    path = FIXTURES / "hostile" / "flax" / "msgpack_numpy_object.msgpack"
    canary = _canary("/tmp/modelseal-msgpack-numpy-canary")
    out = _run([python, "-c", MSGPACK_NUMPY, str(path)], tmp_path)
    if "No module named 'msgpack_numpy'" in out:
        pytest.skip("msgpack-numpy not installed")
    assert "UNPACKED" in out and canary.exists(), out
    canary.unlink()
    assert {"MSGPACK-NUMPY-PICKLE", "PICKLE-DANGEROUS-CALL"} <= rule_ids(scan_path(path).findings)


MXNET_CUSTOM = """
import os, sys
import mxnet as mx
CANARY = "/tmp/modelseal-mxnet-oracle-canary"

class Op(mx.operator.CustomOp):
    def forward(self, is_train, req, in_data, out_data, aux):
        open(CANARY, "w").write("ran")
        self.assign(out_data[0], req[0], in_data[0])

@mx.operator.register("modelseal_pwn")
class Prop(mx.operator.CustomOpProp):
    def list_arguments(self):
        return ["data"]
    def infer_shape(self, in_shape):
        return in_shape, in_shape, []
    def create_operator(self, ctx, shapes, dtypes):
        return Op()

ex = mx.sym.load(sys.argv[1]).bind(mx.cpu(), {"data": mx.nd.ones((1, 4))})
ex.forward()
mx.nd.waitall()
print("RAN")
"""

MXNET_LOAD = """
import sys
import mxnet as mx
try:
    (mx.sym.load if sys.argv[1].endswith(".json") else mx.nd.load)(sys.argv[1])
    print("LOADED")
except Exception as e:
    print("REFUSED", str(e).strip().splitlines()[-1][:200])
"""


def test_mxnet_custom_op_runs_registered_python_and_is_flagged(tmp_path: Path) -> None:
    python = _python("MODELSEAL_MXNET_PYTHON")
    graph = FIXTURES / "hostile" / "mxnet" / "custom_op-symbol.json"
    canary = _canary("/tmp/modelseal-mxnet-oracle-canary")
    out = _run([python, "-c", MXNET_CUSTOM, str(graph)], tmp_path)
    assert "RAN" in out and canary.exists(), out
    canary.unlink()
    assert "MXNET-CUSTOM-OP" in rule_ids(scan_path(graph).findings)


def test_mxnet_loader_outcomes_match_the_scan(tmp_path: Path) -> None:
    python = _python("MODELSEAL_MXNET_PYTHON")
    for name in ("mlp-symbol.json", "mlp-0000.params", "sparse.params"):
        path = FIXTURES / "benign" / "mxnet" / name
        assert "LOADED" in _run([python, "-c", MXNET_LOAD, str(path)], tmp_path), name
        assert scan_path(path).verdict is Verdict.CLEAN
    lie = FIXTURES / "hostile" / "mxnet" / "count_lie.params"
    assert "REFUSED" in _run([python, "-c", MXNET_LOAD, str(lie)], tmp_path)
    assert "MXNET-MALFORMED" in rule_ids(scan_path(lie).findings)


def test_llamafile_prologue_is_a_program_sh_runs(tmp_path: Path) -> None:
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no sh")
    path = tmp_path / "m.llamafile"
    shutil.copy(FIXTURES / "benign" / "llamafile" / "tiny_chatml.llamafile", path)
    canary = _canary("/tmp/modelseal-llamafile-canary")
    _run([sh, str(path)], tmp_path, memory=1 << 30)
    assert canary.exists()
    canary.unlink()
    assert "EXECUTABLE-FILE" in rule_ids(scan_path(path).findings)
