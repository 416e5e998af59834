"""Short slice of the differential oracle (benchmarks/differential.py runs the campaigns).

The oracle python is `MODELSEAL_ORACLE_PYTHON` (default: this interpreter); loaders whose library it lacks
are skipped, and without it the oracle tests skip. Locally: MODELSEAL_ORACLE_PYTHON=/work/oracle/bin/python.
"""

from __future__ import annotations

import io
import itertools
import pickletools
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.oracle import calibrate, mutate, payloads  # noqa: E402
from benchmarks.oracle.campaign import Job, inputs_for  # noqa: E402
from benchmarks.oracle.client import Input, Oracle, oracle_python  # noqa: E402
from benchmarks.oracle.verdict import Scanner  # noqa: E402

CANARY = "/tmp/modelseal-oracle-test-canary"


def _pickle_call(mod: str, name: str, args: tuple) -> bytes:
    return payloads.FORMS["global-reduce-p2"](mod, name, args)


# ------------------------------------------------------------------------------ no oracle needed

def test_payload_forms_are_pickles_modelseal_flags(tmp_path: Path) -> None:
    """Every generated form of every gadget parses as a pickle, and modelseal flags each bare payload."""
    scanner = Scanner()
    missed = []
    for origin, pkl in payloads.payload_pickles():
        list(pickletools.genops(io.BytesIO(pkl)))  # raises on a malformed payload
        p = tmp_path / "p.pkl"
        p.write_bytes(pkl)
        if not scanner.scan(p).flagged:
            missed.append(origin)
    assert not missed, missed


def test_in_process_verdict_is_the_cli_exit_code(tmp_path: Path) -> None:
    """The campaign scans in-process; `modelseal scan` must agree: flagged <=> exit 1, clean <=> exit 0."""
    rng = random.Random(5)
    evil = _pickle_call("os", "system", ("true",))
    import pickle
    cases = {"honest.pkl": pickle.dumps({"a": [1, 2.5]}, protocol=4),
             "evil.pkl": evil, "evil.npy": mutate.MUTATORS["npy-dtype"](evil, rng)[0],
             "evil.tar": mutate.MUTATORS["tar-wrap"](evil, rng)[0], "notes.txt": b"plain words\n"}
    scanner = Scanner()
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        v = scanner.scan(p)
        rc = subprocess.run([sys.executable, "-c", "from scanner.cli import main; main()", "scan", str(p)],
                            cwd=ROOT, capture_output=True, timeout=120).returncode
        assert rc == (1 if v.flagged else 0), (name, rc, v)
    assert scanner.scan(tmp_path / "evil.pkl").flagged and not scanner.scan(tmp_path / "honest.pkl").flagged


def test_inputs_are_deterministic_per_seed() -> None:
    a = [(i.origin, i.data) for i in itertools.islice(inputs_for(7, 0, 1, fixtures=False, generated=False), 40)]
    b = [(i.origin, i.data) for i in itertools.islice(inputs_for(7, 0, 1, fixtures=False, generated=False), 40)]
    c = [(i.origin, i.data) for i in itertools.islice(inputs_for(8, 0, 1, fixtures=False, generated=False), 40)]
    assert a == b
    assert a != c


def test_mutators_change_their_structure() -> None:
    rng = random.Random(1)
    npy = payloads.npy_object(_pickle_call("os", "system", ("true",)))
    out, recipe = mutate.MUTATORS["npy-header"](npy, rng)
    assert out.startswith(b"\x93NUMPY") and out != npy and recipe.startswith("npy-")
    tar = (ROOT / "fixtures/benign/containers/legacy_tar.tar").read_bytes()
    for _ in range(20):
        got = mutate.MUTATORS["tar-header"](tar, rng)
        if got and got[1].startswith("tar-v7@"):
            pos = int(got[1].split("@")[1])
            assert got[0][pos + 257:pos + 262] == b"\0" * 5  # no ustar magic, checksum still valid
            import tarfile
            assert tarfile.open(fileobj=io.BytesIO(got[0])).getmembers()
            break
    else:
        pytest.fail("no v7 tar mutation in 20 tries")


def test_tar_wrap_writes_every_header_format_tarfile_reads() -> None:
    """v7 (no magic), GNU, ustar, pax and an odd magic: tarfile (torch's legacy path) opens each by checksum."""
    import tarfile
    rng = random.Random(3)
    seen = set()
    pkl = _pickle_call("os", "system", ("true",))
    for _ in range(60):
        out, recipe = mutate.MUTATORS["tar-wrap"](pkl, rng)
        magic = recipe.split("-")[1]
        seen.add(magic)
        if magic == "v7":
            assert out[257:265] == b"\0" * 8
        layout = recipe.split(":")[1]
        with tarfile.open(fileobj=io.BytesIO(out)) as t:
            names = t.getnames()
            if layout == "single":
                assert len(names) == 1
            else:  # torch's legacy layout, the (payload) pickle in the member the recipe names
                assert names == ["sys_info", "pickle", "storages", "tensors"]
                body = t.extractfile(layout.split("-", 1)[1]).read()
                assert len(body) > 8 and list(pickletools.genops(io.BytesIO(body)))
        assert mutate._tar_headers(out)
    assert seen == {"v7", "gnu", "ustar", "pax", "odd"}


def test_npy_dtype_headers_parse_and_keep_the_pickle() -> None:
    pytest.importorskip("numpy")
    from numpy.lib import format as npf
    rng = random.Random(4)
    pkl = _pickle_call("os", "system", ("true",))
    descrs = set()
    parsed = objects = 0
    for _ in range(80):
        out, recipe = mutate.MUTATORS["npy-dtype"](pkl, rng)
        f = io.BytesIO(out)
        major, _minor = npf.read_magic(f)
        descrs.add(recipe.split(":", 2)[2])
        if major < 3:  # the header is parsed without reading the array (no pickle runs)
            read = npf.read_array_header_1_0 if major == 1 else npf.read_array_header_2_0
            try:
                _shape, _order, dtype = read(f, max_header_size=1 << 20)
            except ValueError:  # numpy refuses some dtype states (a case the scanner must also bear)
                continue
            parsed += 1
            objects += dtype.hasobject
            assert list(pickletools.genops(io.BytesIO(out[f.tell():])))  # the body is a whole pickle
    assert len(descrs) >= 12
    assert parsed >= 30 and objects >= 15, (parsed, objects)


# ------------------------------------------------------------------------------ the oracle

@pytest.fixture(scope="module")
def oracle():
    python = oracle_python()
    try:
        o = Oracle(python, allowed=calibrate.CALIBRATION, batch=8)
    except OSError as e:
        pytest.skip(f"oracle python {python} not runnable: {e}")
    if not o.available:
        o.close()
        pytest.skip(f"no loader importable in {python}")
    yield o
    o.close()


def _need(oracle: Oracle, *loaders: str) -> None:
    missing = [n for n in loaders if n not in oracle.available]
    if missing:
        pytest.skip(f"loader(s) {missing} not installed in {oracle.python}")


def _events(oracle: Oracle, data: bytes, ext: str, loaders: list[str], name: str = "") -> dict[str, set[str]]:
    out = oracle.run([Input("t", data, ext, name=name)], loaders=loaders)[0]
    got: dict[str, set[str]] = {n: set() for n in loaders}
    for e in out.events:
        got[e["loader"]].add(e["kind"])
    return got


PICKLE_LOADERS = ["pickle", "numpy", "joblib", "torch"]
KNOWN = [
    ("os.system", _pickle_call("os", "system", ("true",)), "exec"),
    ("open-for-write", _pickle_call("builtins", "open", (CANARY, "w")), "write"),
    ("socket", _pickle_call("socket", "create_connection", (("127.0.0.1", 9),)), "network"),
]


@pytest.mark.parametrize("loader", PICKLE_LOADERS)
@pytest.mark.parametrize("name,data,kind", KNOWN, ids=[k[0] for k in KNOWN])
def test_sandbox_catches_known_payload(oracle: Oracle, loader: str, name: str, data: bytes, kind: str) -> None:
    _need(oracle, loader)
    got = _events(oracle, data, ".pkl", [loader])
    assert kind in got[loader], got
    assert not Path(CANARY).exists(), "the hook must stop the write, not only record it"


def test_a_crash_loses_no_loader_verdict(oracle: Oracle) -> None:
    """A load that kills its child: a fresh child runs that input's remaining loaders, then the next input."""
    _need(oracle, "pickle", "torch-weights-only")
    exits = _pickle_call("os", "_exit", (3,))
    names = [n for n in PICKLE_LOADERS + ["torch-weights-only"] if n in oracle.available]
    outs = oracle.run([Input("x1", exits, ".pkl"), Input("x2", KNOWN[0][1], ".pkl")], loaders=names)
    assert outs[0].loaders["pickle"]["status"].startswith("crash")
    assert set(outs[0].loaders) == set(names)  # every loader has its own verdict
    assert outs[0].loaders["torch-weights-only"]["status"] == "error"  # refused, so it ran in a fresh child
    assert {e["loader"] for e in outs[1].events} >= {"pickle"}


def test_weights_only_refuses_known_payload(oracle: Oracle) -> None:
    _need(oracle, "torch-weights-only")
    assert _events(oracle, KNOWN[0][1], ".pkl", ["torch-weights-only"]) == {"torch-weights-only": set()}


def test_npz_member_payload_fires_in_numpy(oracle: Oracle) -> None:
    _need(oracle, "numpy")
    got = _events(oracle, payloads.npz(KNOWN[0][1]), ".npz", ["numpy"])
    assert "exec" in got["numpy"]


SSTI = "{{ cycler.__init__.__globals__.os.system('true') }}"


def test_plain_jinja_fires_sandboxed_does_not(oracle: Oracle) -> None:
    _need(oracle, "jinja-plain", "jinja-sandbox")
    got = _events(oracle, SSTI.encode(), ".jinja", ["jinja-plain", "jinja-sandbox"])
    assert "exec" in got["jinja-plain"]
    assert got["jinja-sandbox"] == set()  # transformers' ImmutableSandboxedEnvironment refuses


def test_gguf_chat_template_rendered(oracle: Oracle, tmp_path: Path) -> None:
    _need(oracle, "gguf", "jinja-plain")
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "t.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_chat_template(SSTI)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    got = _events(oracle, path.read_bytes(), ".gguf", ["gguf", "jinja-plain"])
    assert got["gguf"] == set() and "exec" in got["jinja-plain"]


def test_hydra_instantiate_fires(oracle: Oracle) -> None:
    """Hydra blocklists os.system & co. itself (the oracle sees no event there); builtins.open still runs."""
    _need(oracle, "hydra")
    got = _events(oracle, b"_target_: os.system\n_args_: ['true']\n", ".yaml", ["hydra"])
    assert got["hydra"] == set()
    got = _events(oracle, f"_target_: builtins.open\n_args_: ['{CANARY}', 'w']\n".encode(), ".yaml", ["hydra"])
    assert "write" in got["hydra"]
    assert not Path(CANARY).exists()


HONEST = textwrap.dedent("""
    import sys, pickle, pathlib
    out = pathlib.Path(sys.argv[1])
    (out / "plain.pkl").write_bytes(pickle.dumps({"a": [1, 2.5, "x"], "b": (None, True)}, protocol=4))
    try:
        import numpy as np
        np.save(out / "arr.npy", np.arange(12, dtype="<f4").reshape(3, 4))
        np.savez(out / "arrs.npz", a=np.zeros(3), b=np.ones((2, 2), dtype="i2"))
    except ImportError:
        pass
    try:
        import joblib, numpy as np
        for c in (0, ("zlib", 3), ("gzip", 3), ("bz2", 3), ("xz", 3)):
            name = "none" if c == 0 else c[0]
            joblib.dump({"w": np.arange(5.0), "n": 3}, out / f"model_{name}.joblib", compress=c)
    except ImportError:
        pass
    try:
        import torch
        torch.save({"w": torch.zeros(4), "b": torch.ones(2, 2)}, out / "sd.pt")
        torch.save({"w": torch.zeros(4)}, out / "legacy.pt", _use_new_zipfile_serialization=False)
    except ImportError:
        pass
    (out / "chat.jinja").write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\\n{% endfor %}")
    (out / "conf.yaml").write_text("_target_: collections.OrderedDict\\n")
""")


def test_honest_files_cause_no_dangerous_event(oracle: Oracle, tmp_path: Path) -> None:
    """Held out from the calibration: files written now by the real libraries in the oracle python."""
    subprocess.run([oracle.python, "-c", HONEST, str(tmp_path)], check=True, timeout=120,
                   capture_output=True)
    files = sorted(tmp_path.iterdir())
    assert files
    inputs = [Input(f"h{i}", p.read_bytes(), p.suffix, p.name, p.name) for i, p in enumerate(files)]
    noisy = {o.input.origin: o.events for o in oracle.run(inputs) if o.events}
    assert not noisy, noisy


def test_seeded_mutation_batch_has_no_violation(oracle: Oracle, tmp_path: Path) -> None:
    job = Job(oracle, tmp_path, minimize=False)
    gen = inputs_for(0, 0, 1, fixtures=False, generated=False)
    for _ in range(3):
        job.account(oracle.run(list(itertools.islice(gen, 32))))
    assert job.stats.inputs == 96
    assert job.stats.violations == 0, "\n".join(f"{k}: {v['origin']} -> {v['event']}"
                                                for k, v in job.stats.classes.items())


# ------------------------------------------------------------------------------ campaign repros

REPROS = Path(__file__).resolve().parent / "repros"
REPRO_LIST = sorted(REPROS.glob("*/info.json")) if REPROS.exists() else []


def _repro(info: Path) -> tuple[Path, dict]:
    import json
    doc = json.loads(info.read_text(encoding="utf-8"))
    return next(p for p in info.parent.iterdir() if p.name.startswith("minimized-")), doc


@pytest.mark.xfail(strict=False, reason="holes of the current scanner the campaign found; fixes are on other "
                                        "branches (H1/H2/H4) and this is expected to pass after the merge")
@pytest.mark.parametrize("info", REPRO_LIST, ids=[p.parent.name for p in REPRO_LIST])
def test_campaign_repro_flagged(info: Path, tmp_path: Path) -> None:
    path, doc = _repro(info)
    named = tmp_path / path.name.split("-", 1)[1]  # scanned under the name the campaign gave it
    named.write_bytes(path.read_bytes())
    assert Scanner().scan(named).flagged, f"{doc['class']}: {doc['origin']} -> {doc['events'][0]}"


@pytest.mark.parametrize("info", REPRO_LIST, ids=[p.parent.name for p in REPRO_LIST])
def test_campaign_repro_fires_in_loader(oracle: Oracle, info: Path) -> None:
    path, doc = _repro(info)
    ev = doc["events"][0]
    _need(oracle, ev["loader"])
    got = _events(oracle, path.read_bytes(), path.suffix, [ev["loader"]], name=path.name.split("-", 1)[1])
    assert ev["kind"] in got[ev["loader"]], got
