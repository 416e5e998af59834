"""Class policies generated from library source (tools/gen_class_policies.py) and how the scanner uses them.

Synthetic packages are written as wheels in tmp dirs and analyzed with the real generator; nothing is imported."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import textwrap
import zipfile
from pathlib import Path

import pytest

from scanner.rules import COMPILED, load_ruleset, rules_dir
from tests.conftest import rule_ids, scan_data
from tools import gen_class_policies as gen
from tools.class_analysis import SAFE, SINK, UNKNOWN, Analyzer, ModuleSource, parse_module

ROOT = Path(__file__).resolve().parent.parent


def _analyzer(files: dict[str, str]) -> Analyzer:
    mods = {}
    for path, text in files.items():
        parts = path[:-3].split("/")
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        m = parse_module(name, parts[0], textwrap.dedent(text), is_pkg)
        assert m is not None
        mods[name] = m
    return Analyzer(ModuleSource.of(mods))


# Every way a sink can be reached from __setstate__: the generated policy must never call the class safe.
SINK_FORMS = {
    "os.system": "import os\n\ndef sink(x):\n    os.system(x)\n",
    "alias import": "from subprocess import run as go\n\ndef sink(x):\n    go(x, shell=True)\n",
    "builtin open": "def sink(x):\n    return open(x).read()\n",
    "eval": "def sink(x):\n    return eval(x)\n",
    "pickle.loads": "import pickle as p\n\ndef sink(x):\n    return p.loads(x)\n",
    "torch.load": "import torch\n\ndef sink(x):\n    return torch.load(x)\n",
    "importlib": "import importlib\n\ndef sink(x):\n    return importlib.import_module(x)\n",
    "getattr computed": "import os\n\ndef sink(x):\n    return getattr(os, x)()\n",
    "local import": "def sink(x):\n    import ctypes\n    return ctypes.CDLL(x)\n",
    "socket": "import socket\n\ndef sink(x):\n    socket.create_connection(x)\n",
}
PATHS = {
    "direct": ("class C:\n    def __setstate__(self, state):\n        {call}\n", "libx.mod.C"),
    "helper method": ("class C:\n    def __setstate__(self, state):\n        self._restore(state)\n"
                      "    def _restore(self, state):\n        {call}\n", "libx.mod.C"),
    "base class in another package": ("from liby.base import Base\n\nclass C(Base):\n    pass\n", "libx.mod.C"),
    "super chain": ("from liby.base import Base\n\nclass C(Base):\n    def __setstate__(self, s):\n"
                    "        super().__setstate__(s)\n", "libx.mod.C"),
    "__getattr__ (BUILD looks __setstate__ up)": ("class C:\n    def __getattr__(self, name):\n        {call}\n",
                                                  "libx.mod.C"),
    "__new__": ("class C:\n    def __new__(cls, *a):\n        {call}\n        return object.__new__(cls)\n",
                "libx.mod.C"),
    "__setattr__ of slot state": ("class C:\n    __slots__ = ('a',)\n    def __setattr__(self, k, v):\n"
                                  "        {call}\n", "libx.mod.C"),
}


@pytest.mark.parametrize("form", sorted(SINK_FORMS))
@pytest.mark.parametrize("path", sorted(PATHS))
def test_setstate_reaching_a_sink_is_never_safe(form: str, path: str) -> None:
    template, cls = PATHS[path]
    call = "from libx.sinks import sink; sink(state if 'state' in dir() else 0)"
    files = {
        "libx/__init__.py": "",
        "libx/sinks.py": SINK_FORMS[form],
        "libx/mod.py": template.format(call=call),
        "liby/__init__.py": "",
        "liby/base.py": "class Base:\n    def __setstate__(self, state):\n        self._go(state)\n"
                        "    def _go(self, state):\n        from libx.sinks import sink\n        sink(state)\n",
    }
    v = _analyzer(files).construct(cls)
    assert v.level == SINK, (form, path, v)
    assert v.path and "sink" in " ".join(v.path)


def test_harmless_classes_are_safe_and_reason_paths_name_the_sink() -> None:
    an = _analyzer({
        "lib/__init__.py": "",
        "lib/m.py": """
            import os
            from collections import OrderedDict

            class Plain:
                def __init__(self, a=1):
                    self.a = a

            class Restores:
                def __setstate__(self, state):
                    self.__dict__.update(state)
                    if "cache" not in self.__dict__:
                        self.cache = OrderedDict()

            class Loads:
                def __init__(self, path):
                    self.model = self.load_model(path)
                def load_model(self, path):
                    with open(os.path.join(path, "m.bin")) as f:
                        return f.read()
        """,
    })
    assert an.construct("lib.m.Plain").level == SAFE and an.call_class("lib.m.Plain").level == SAFE
    assert an.construct("lib.m.Restores").level == SAFE
    # __init__-only sink: safe to reconstruct, not to call
    assert an.construct("lib.m.Loads").level == SAFE
    v = an.call_class("lib.m.Loads")
    assert v.level == SINK and "builtins.open" in v.reason() and "Loads.load_model" in v.reason()


def test_unresolvable_code_on_the_state_path_is_unknown_not_safe() -> None:
    an = _analyzer({
        "lib/__init__.py": "",
        "lib/m.py": """
            from somewhere_not_analyzed import Base, helper

            class FromUnknownBase(Base):
                pass

            class CallsUnknown:
                def __setstate__(self, state):
                    helper(state)

            class CallsAValue:
                def __setstate__(self, state):
                    state["callback"]()
        """,
    })
    for cls in ("FromUnknownBase", "CallsUnknown", "CallsAValue"):
        assert an.construct(f"lib.m.{cls}").level == UNKNOWN, cls


def _wheel(dirpath: Path, dist: str, version: str, files: dict[str, str]) -> Path:
    p = dirpath / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(p, "w") as z:
        for name, text in files.items():
            z.writestr(name, textwrap.dedent(text))
    return p


SYNTH = {
    "synthlib/__init__.py": "",
    "synthlib/models.py": """
        import subprocess

        class Model:
            def __init__(self, path):
                subprocess.run(["fetch", path])

        class Hostile:
            def __setstate__(self, state):
                subprocess.run(state["cmd"], shell=True)

        class Fine:
            def __init__(self, n=0):
                self.n = n

        def helper_fn(x):
            return x + 1
    """,
}


@pytest.fixture(scope="module")
def synth_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of rules/ whose generated class policies come from a synthetic wheel."""
    root = tmp_path_factory.mktemp("synth")
    wheels = root / "wheels"
    wheels.mkdir()
    _wheel(wheels, "synthlib", "1.0", SYNTH)
    _wheel(wheels, "synthlib", "0.9", {**SYNTH, "synthlib/models.py": SYNTH["synthlib/models.py"].replace(
        "class Fine:", "class Older:\n            pass\n\n        class Fine:")})
    rules = root / "rules"
    shutil.copytree(rules_dir(), rules, ignore=shutil.ignore_patterns("generated"))
    out = rules / "generated" / "class-policies"
    assert gen.main(["--wheels", str(wheels), "--out", str(out)]) == 0
    return rules


def _global(mod: str, name: str) -> bytes:
    return b"c" + mod.encode() + b"\n" + name.encode() + b"\n"


def _s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def test_generated_file_records_library_versions_verdicts_and_reasons(synth_rules: Path) -> None:
    out = synth_rules / "generated" / "class-policies"
    index = json.loads((out / "index.json").read_text())
    assert index["modules"]["synthlib"] == ["synthlib"]
    assert "gen_class_policies.py" in index["generated_by"]
    lib = json.loads((out / "synthlib.json").read_text())
    assert lib["versions"] == ["0.9", "1.0"]
    assert index["libraries"]["synthlib"]["sha256"] == hashlib.sha256((out / "synthlib.json").read_bytes()).hexdigest()
    names = lib["names"]
    assert names["synthlib.models.Fine"] == "Css"
    assert names["synthlib.models.Model"] == "Csx"
    assert names["synthlib.models.Hostile"][1] == "x"
    assert names["synthlib.models.Older"] == "Css"  # only in 0.9: versions merge
    assert names["synthlib.models.helper_fn"] == "Fs"
    assert "subprocess.run" in lib["why"]["synthlib.models.Hostile"]


def test_scanner_uses_generated_policies_construct_vs_call(synth_rules: Path) -> None:
    rules = load_ruleset(synth_rules)
    model = _global("synthlib.models", "Model")
    newobj = b"\x80\x02" + model + b")\x81}" + _s("w") + b"K\x01sb."
    reduce = b"\x80\x02" + model + _s("/tmp/x") + b"\x85R."
    assert rule_ids(scan_data(newobj, "m.pkl", rules=rules)[1]) == set()
    assert "PICKLE-DANGEROUS-CALL" in rule_ids(scan_data(reduce, "m.pkl", rules=rules)[1])
    via_copyreg = b"\x80\x02ccopyreg\n__newobj__\n" + model + b"\x85R}b."
    assert rule_ids(scan_data(via_copyreg, "m.pkl", rules=rules)[1]) == set()
    hostile = b"\x80\x02" + _global("synthlib.models", "Hostile") + b")\x81}" + _s("cmd") + _s("id") + b"sb."
    found = scan_data(hostile, "m.pkl", rules=rules)[1]
    assert any(f.rule_id == "PICKLE-DANGEROUS-CALL" and f.severity.value == "high" and "subprocess.run" in f.message
               and "Hostile.__setstate__" in f.message for f in found)
    fine = b"\x80\x02" + _global("synthlib.models", "Fine") + b"K\x03\x85R."
    assert rule_ids(scan_data(fine, "m.pkl", rules=rules)[1]) == set()
    # without the generated data the same class is unknown
    assert "PICKLE-UNKNOWN-GLOBAL" in rule_ids(scan_data(fine, "m.pkl")[1])


def test_getattr_is_asked_only_without_setstate() -> None:
    an = _analyzer({
        "lib/__init__.py": "",
        "lib/m.py": """
            import os

            class Base:
                def __setstate__(self, state):
                    self.__dict__.update(state)

            class Forwards(Base):
                def __getattr__(self, name):
                    return os.popen(name)

            class NoSetstate:
                def __getattr__(self, name):
                    return os.popen(name)
        """,
    })
    assert an.construct("lib.m.Forwards").level == SAFE  # BUILD finds Base.__setstate__ by ordinary lookup
    assert an.construct("lib.m.NoSetstate").level == SINK


def test_hand_deny_wins_over_generated_policy(synth_rules: Path, tmp_path: Path) -> None:
    rules_copy = tmp_path / "rules"
    shutil.copytree(synth_rules, rules_copy)
    (rules_copy / "generated" / COMPILED.split("/")[-1]).unlink(missing_ok=True)
    extra = '\n[[deny]]\ngroup = "test"\nseverity = "critical"\nreason = "test deny"\nnames = ["synthlib.models.Fine"]\n'
    with open(rules_copy / "pickle-globals.toml", "a", encoding="utf-8") as f:
        f.write(extra)
    rules = load_ruleset(rules_copy)
    fine = b"\x80\x02" + _global("synthlib.models", "Fine") + b"K\x03\x85R."
    found = scan_data(fine, "m.pkl", rules=rules)[1]
    assert any(f.rule_id == "PICKLE-DANGEROUS-CALL" and "test deny" in f.message for f in found)


def test_compiled_rules_are_fresh_and_equal_to_toml() -> None:
    """rules/generated/compiled-rules.json matches every rules/*.toml (re-run tools/compile_rules.py)."""
    import tomllib

    data = json.loads((rules_dir() / COMPILED).read_text())
    tomls = sorted(rules_dir().glob("*.toml"))
    assert sorted(data["docs"]) == sorted(p.stem for p in tomls), "run: python tools/compile_rules.py"
    for p in tomls:
        raw = p.read_bytes()
        entry = data["docs"][p.stem]
        assert entry["sha256"] == hashlib.sha256(raw).hexdigest(), f"{p.name} changed: python tools/compile_rules.py"
        assert entry["doc"] == tomllib.loads(raw.decode())


def test_stale_compiled_entry_falls_back_to_toml(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(rules_dir(), rules)
    data = json.loads((rules / COMPILED).read_text())
    data["docs"]["pickle"]["doc"]["rule"]["PICKLE-MALFORMED"]["title"] = "tampered"
    (rules / COMPILED).write_text(json.dumps(data))
    assert load_ruleset(rules).catalog["PICKLE-MALFORMED"].title == "tampered"  # bytes unchanged: compiled used
    with open(rules / "pickle.toml", "a", encoding="utf-8") as f:
        f.write("\n# edited\n")
    assert load_ruleset(rules).catalog["PICKLE-MALFORMED"].title != "tampered"  # edited: TOML parsed


def test_committed_policies_cover_forty_libraries_with_versions() -> None:
    out = rules_dir() / "generated" / "class-policies"
    index = json.loads((out / "index.json").read_text())
    libs = index["libraries"]
    assert len(libs) >= 40
    for dist, info in libs.items():
        assert info["versions"], dist
        assert hashlib.sha256((out / info["file"]).read_bytes()).hexdigest() == info["sha256"], dist
    for must in ("torch", "scikit-learn", "transformers", "gensim", "joblib", "spacy", "statsmodels", "nltk"):
        assert must in libs, must
    assert len(libs["joblib"]["versions"]) >= 3  # wrappers of older joblib versions


def test_runs_split_with_only_merge_into_one_index(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "synthlib", "1.0", SYNTH)
    _wheel(wheels, "otherlib", "2.0", {"otherlib/__init__.py": "class K:\n    pass\n"})
    a, b = tmp_path / "a", tmp_path / "b"
    assert gen.main(["--wheels", str(wheels), "--out", str(a), "--only", "synthlib"]) == 0
    assert gen.main(["--wheels", str(wheels), "--out", str(b), "--only", "otherlib"]) == 0
    assert gen.main(["--out", str(a), "--merge", str(b)]) == 0
    index = json.loads((a / "index.json").read_text())
    assert sorted(index["libraries"]) == ["otherlib", "synthlib"]
    assert index["modules"] == {"otherlib": ["otherlib"], "synthlib": ["synthlib"]}
    assert json.loads((a / "otherlib.json").read_text())["names"]["otherlib.K"] == "Css"
