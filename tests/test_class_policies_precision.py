"""Precision of the generated class policies (issue 9): getattr judged by where its name comes from and what
happens to its result, decorators judged by the wrapper they return, names that only old versions define
(version ranges, a loader's own renames), hand entries for Cython classes. Each case is checked both ways."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scanner.rules import load_ruleset
from scanner.rules import rules_dir as real_rules
from tests.conftest import rule_ids, scan_data
from tests.test_class_policies import _analyzer, _global, _s, _wheel
from tools import gen_class_policies as gen
from tools.class_analysis import SAFE, SINK, UNKNOWN

GETATTR = {
    "lib/__init__.py": "",
    "lib/m.py": """
        import os

        def _wrap(obj, method, *args):
            bound = getattr(obj, method, None)
            return bound(*args)

        def total(a):
            return _wrap(a, "sum")

        def by_name(a, name):
            return _wrap(a, name)

        class MovesStates:
            _defaults = {}
            def __setstate__(self, state):
                self.__dict__.update(state)
                for key in self._defaults:
                    current = getattr(self, key)
                    if isinstance(current, list):
                        setattr(self, key, [v.to("cpu") for v in current])

        class CallsNamedMethod:
            def __setstate__(self, state):
                self.__dict__.update(state)
                getattr(self, state["hook"])()

        class CallsThroughLocal:
            def __setstate__(self, state):
                fn = getattr(os, self.name)
                fn(self.arg)

        class StoresIt:
            def __setstate__(self, state):
                self.act = getattr(os, state["act"])

        class ReturnsIt:
            def __setstate__(self, state):
                self.f = self._pick(state["n"])
            def _pick(self, n):
                return getattr(os, n)

        class KnownNames:
            def __setstate__(self, state):
                for n in ("keys", "values"):
                    getattr(state, n)()

        class KnownLoader:
            def __setstate__(self, state):
                for n in ("keys", "load"):
                    getattr(state, n)()

        class HelperWithConstant:
            def __setstate__(self, state):
                self.t = total(state["a"])

        class HelperWithData:
            def __setstate__(self, state):
                self.t = by_name(state["a"], state["m"])

        class RebindsConstant:
            def __setstate__(self, state):
                self.t = self._go(state, "sum")
            def _go(self, obj, m):
                m = obj["m"]
                return getattr(obj, m)()
    """,
}


@pytest.mark.parametrize(("cls", "level"), [
    ("MovesStates", SAFE),          # torchmetrics: a computed attribute read as data, never called
    ("CallsNamedMethod", SINK),     # the classic gadget: a name from the pickle, then called
    ("CallsThroughLocal", SINK),
    ("StoresIt", SINK),             # stored for a later call
    ("ReturnsIt", SINK),
    ("KnownNames", SAFE),           # loop over constant names: obj.keys() / obj.values()
    ("KnownLoader", SINK),          # ... one of them a loader name
    ("HelperWithConstant", SAFE),   # numpy's _wrapreduction(a, ufunc, 'sum'): the name is a constant at the call
    ("HelperWithData", SINK),       # the same helper handed a name from the pickle
    ("RebindsConstant", SINK),      # a constant parameter rebound from data is data
])
def test_getattr_is_a_sink_when_a_name_from_data_reaches_a_call(cls: str, level: str) -> None:
    v = _analyzer(GETATTR).construct(f"lib.m.{cls}")
    assert v.level == level, (cls, v)


def test_getattr_gadget_from_setstate_names_the_path() -> None:
    v = _analyzer(GETATTR).construct("lib.m.HelperWithData")
    assert "getattr with a computed name" in v.reason() and "_wrap" in v.reason()


DECORATORS = {
    "lib/__init__.py": "",
    "lib/deco.py": """
        import functools
        import os
        import warnings

        def deprecated(reason):
            def decorator(func):
                @functools.wraps(func)
                def new_func(*args, **kwargs):
                    warnings.warn(reason)
                    return func(*args, **kwargs)
                return new_func
            return decorator

        def audited(func):
            def inner(*args):
                os.system("logger called")
                return func(*args)
            return inner
    """,
    "lib/m.py": """
        from lib.deco import deprecated, audited
        from elsewhere import mystery

        @deprecated("use g")
        def old(x):
            return x + 1

        @audited
        def logged(x):
            return x

        @mystery
        def unknown(x):
            return x

        class UsesOld:
            def __setstate__(self, state):
                self.v = old(state["x"])

        class UsesLogged:
            def __setstate__(self, state):
                self.v = logged(state["x"])
    """,
}


def test_decorators_are_judged_by_the_wrapper_they_return() -> None:
    an = _analyzer(DECORATORS)
    assert an.judge_function("lib.m.old").level == SAFE       # warns, then calls the wrapped function
    assert an.construct("lib.m.UsesOld").level == SAFE
    v = an.judge_function("lib.m.logged")
    assert v.level == SINK and "os.system" in v.reason()      # the wrapper itself reaches a sink
    assert an.construct("lib.m.UsesLogged").level == SINK
    assert an.judge_function("lib.m.unknown").level == UNKNOWN  # a decorator outside the analyzed source


OLD = {
    "oldlib/__init__.py": "",
    "oldlib/models/__init__.py": "",
    "oldlib/models/current.py": "class Model:\n    pass\n",
    "oldlib/models/deprecated/__init__.py": "",
    "oldlib/models/deprecated/vecs.py": """
        import subprocess

        class DocvecsArray:
            def __setstate__(self, state):
                self.__dict__.update(state)

        class Evil:
            def __setstate__(self, state):
                subprocess.run(state["cmd"])
    """,
    "oldlib/models/vecs.py": "from oldlib.models.current import Model\n",
    "oldlib/saveload.py": """
        def load_old(data):
            data = data.replace(b'oldlib.models.vecs', b'oldlib.models.deprecated.vecs')
            return data
    """,
}


def test_names_only_old_versions_define_carry_their_range_and_the_loaders_renames(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "oldlib", "3.8", OLD)
    _wheel(wheels, "oldlib", "4.0", {k: v for k, v in OLD.items() if "deprecated" not in k and "saveload" not in k})
    out = tmp_path / "out"
    assert gen.main(["--wheels", str(wheels), "--out", str(out)]) == 0
    doc = json.loads((out / "oldlib.json").read_text())
    names, ranges = doc["names"], doc["ranges"]
    # written as oldlib.models.vecs.DocvecsArray by oldlib < 4, loaded by 3.8 through its own rename
    assert names["oldlib.models.vecs.DocvecsArray"] == "Css"
    assert ranges["oldlib.models.vecs.DocvecsArray"] == ["3.8", "3.8"]
    assert "renamed by oldlib.saveload" in doc["why"]["oldlib.models.vecs.DocvecsArray"]
    assert names["oldlib.models.vecs.Evil"][1] == "x"                  # a renamed class is judged by its code
    assert "oldlib.models.current.Model" not in ranges                  # defined by every analyzed version
    # the scanner names the version range in its reason
    rules_dir = tmp_path / "rules"
    shutil.copytree(real_rules(), rules_dir, ignore=shutil.ignore_patterns("generated"))
    shutil.copytree(out, rules_dir / "generated" / "class-policies")
    rules = load_ruleset(rules_dir)
    evil = b"\x80\x02" + _global("oldlib.models.vecs", "Evil") + b")\x81}" + _s("cmd") + _s("id") + b"sb."
    found = scan_data(evil, "m.pkl", rules=rules)[1]
    assert any(f.rule_id == "PICKLE-DANGEROUS-CALL" and "oldlib 3.8)" in f.message for f in found), found
    fine = b"\x80\x02" + _global("oldlib.models.vecs", "DocvecsArray") + b")\x81}" + _s("n") + b"K\x01sb."
    assert rule_ids(scan_data(fine, "m.pkl", rules=rules)[1]) == set()


def test_hdbscan_metric_rebuilt_by_newobj_is_allowed_but_not_called_directly() -> None:
    metric = _global("hdbscan.dist_metrics", "EuclideanDistance")
    state = b"(G@\x00\x00\x00\x00\x00\x00\x00NNt"  # (p, vec, mat): the arrays do not matter here
    rebuilt = b"\x80\x02" + _global("hdbscan.dist_metrics", "newObj") + metric + b"\x85R" + state + b"b."
    assert rule_ids(scan_data(rebuilt, "m.pkl")[1]) == set()
    called = b"\x80\x02" + metric + b")R."
    assert "PICKLE-DANGEROUS-CALL" in rule_ids(scan_data(called, "m.pkl")[1])


def test_vendored_joblib_wrapper_is_allowed_but_its_loader_is_not() -> None:
    load = b"\x80\x02" + _global("sklearn.externals.joblib.numpy_pickle", "load") + _s("/tmp/x") + b"\x85R."
    found = scan_data(load, "m.pkl")[1]
    assert any(f.rule_id == "PICKLE-DANGEROUS-CALL" and f.severity.value == "critical" for f in found)
    from scanner.formats.pickle.policy import Classifier
    from scanner.rules import Policy

    c = Classifier(load_ruleset(), Policy())
    assert c.classify("sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper").status == "allow"
    assert c.classify("sklearn.externals.joblib.numpy_pickle.NumpyUnpickler").status == "deny"


def test_a_finalizer_acting_on_pickled_state_is_judged_with_reconstruction() -> None:
    an = _analyzer({
        "lib/__init__.py": "",
        "lib/res.py": """
            import os
            import tempfile

            class FileResource:
                def __setstate__(self, state):
                    self.__dict__.update(state)
                def __del__(self):
                    if self.auto:
                        os.unlink(self.name)

            class Closes:
                def __setstate__(self, state):
                    self.__dict__.update(state)
                def __del__(self):
                    self.handle.close()
        """,
    })
    v = an.construct("lib.res.FileResource")
    assert v.level == SINK and "__del__" in v.reason() and "os.unlink" in v.reason()
    assert an.construct("lib.res.Closes").level == SAFE


def test_a_module_forwarding_names_through_pep562_getattr_is_followed() -> None:
    an = _analyzer({
        "sk/__init__.py": "",
        "sk/svm/__init__.py": "",
        "sk/svm/_classes.py": """
            import os

            class LinearSVC:
                def __setstate__(self, state):
                    self.__dict__.update(state)

            class Bad:
                def __setstate__(self, state):
                    os.system(state)
        """,
        "sk/svm/classes.py": """
            from . import _classes

            def __getattr__(name):
                return getattr(_classes, name)
        """,
    })
    assert an.canonical("sk.svm.classes.LinearSVC") == "sk.svm._classes.LinearSVC"
    assert an.construct(an.canonical("sk.svm.classes.LinearSVC")).level == SAFE
    assert an.construct(an.canonical("sk.svm.classes.Bad")).level == SINK


def test_committed_policies_keep_real_library_gadgets_and_cover_old_names() -> None:
    """Real classes whose reconstruction reaches a sink stay denied; names of old releases are judged."""
    out = real_rules() / "generated" / "class-policies"

    def lib(name: str) -> dict:
        return json.loads((out / f"{name}.json").read_text())

    crf = lib("sklearn-crfsuite")
    # __setstate__ writes the pickled bytes to mkstemp(suffix, prefix) with prefix / suffix from the state
    # (a '../' prefix leaves the temp dir); __del__ unlinks the path the state names
    assert crf["names"]["sklearn_crfsuite._fileresource.FileResource"][1] == "x"
    gensim = lib("gensim")
    assert gensim["names"]["gensim.models.wrappers.ldavowpalwabbit.LdaVowpalWabbit"][1] == "x"  # rmtree in __del__
    assert gensim["names"]["gensim.models.doc2vec.DocvecsArray"] == "Css"
    assert gensim["ranges"]["gensim.models.doc2vec.DocvecsArray"][-1].startswith("3.")
    assert gensim["names"]["gensim.models.tfidfmodel.smartirs_normalize"] == "Fs"
    sk = lib("scikit-learn")
    assert sk["names"]["sklearn.svm.classes.LinearSVC"][:2] == "Cs"
    assert sk["ranges"]["sklearn.svm.classes.LinearSVC"][-1].startswith("0.")
    scipy = lib("scipy")
    assert scipy["names"]["scipy.stats._continuous_distns.norm_gen"][1] == "x"  # execs its pickled template


def test_methods_of_locally_built_objects_and_formula_evaluation() -> None:
    """statsmodels ModelData.__setstate__ hands the pickled formula to FormulaManager().get_matrices, which
    evaluates it with patsy / formulaic (Python expressions): a method of a class built in the function is
    followed, and formula evaluation is a sink."""
    an = _analyzer({
        "sm/__init__.py": "",
        "sm/manager.py": """
            import patsy

            class FormulaManager:
                def get_matrices(self, formula, data, eval_env=0):
                    return patsy.dmatrices(formula, data, eval_env=eval_env)

                def describe(self, formula):
                    return str(formula)
        """,
        "sm/data.py": """
            from sm.manager import FormulaManager

            class ModelData:
                def __setstate__(self, d):
                    mgr = FormulaManager()
                    mgr.get_matrices(d["formula"], d["frame"], eval_env=2)
                    self.__dict__.update(d)

            class Describes:
                def __setstate__(self, d):
                    mgr = FormulaManager()
                    self.text = mgr.describe(d["formula"])
        """,
    })
    v = an.construct("sm.data.ModelData")
    assert v.level == SINK and "patsy.dmatrices" in v.reason() and "FormulaManager.get_matrices" in v.reason()
    assert an.construct("sm.data.Describes").level == SAFE


def test_constant_names_pass_through_helpers_and_namedtuples_are_plain_tuples(tmp_path: Path) -> None:
    an = _analyzer({
        "np_/__init__.py": "",
        "np_/core.py": """
            def _wrapit(obj, method, *args):
                return getattr(obj.view(), method)(*args)

            def _wrapfunc(obj, method, *args):
                bound = getattr(obj, method, None)
                if bound is None:
                    return _wrapit(obj, method, *args)
                return bound(*args)

            def swapaxes(a, i, j):
                return _wrapfunc(a, "swapaxes", i, j)

            def by_name(a, name):
                return _wrapfunc(a, name)
        """,
    })
    assert an.judge_function("np_.core.swapaxes").level == SAFE
    assert an.judge_function("np_.core.by_name").level == SINK
    wheels = tmp_path / "w"
    wheels.mkdir()
    _wheel(wheels, "morf", "2.0", {"morf/__init__.py": "", "morf/baseline.py": """
        import collections

        ConstrNode = collections.namedtuple('ConstrNode', ['rcount', 'count', 'splitloc'])
        NotAType = dict(a=1)
    """})
    out = tmp_path / "out"
    assert gen.main(["--wheels", str(wheels), "--out", str(out)]) == 0
    names = json.loads((out / "morf.json").read_text())["names"]
    assert names["morf.baseline.ConstrNode"] == "Css" and "morf.baseline.NotAType" not in names


def test_undecided_library_function_imported_but_not_called_is_low() -> None:
    """The loader only imports the module and reads the name: a library function the generated policy
    cannot decide, stored as a value (thinc layers keep their forward functions), is a note; called, it
    stays high, and a function whose call reaches a sink stays high even when only imported."""
    from conftest import scan_data
    from scanner.findings import Severity

    stored = b"\x80\x02}X\x01\x00\x00\x00fcthinc.layers.chain\nforward\ns."
    _, findings = scan_data(stored, "m.pkl")
    hits = [f for f in findings if "thinc.layers.chain.forward" in f.message]
    assert hits and all(f.severity is Severity.LOW for f in hits)
    called = b"\x80\x02cthinc.layers.chain\nforward\n)R."
    _, findings = scan_data(called, "m.pkl")
    assert any(f.severity.rank >= Severity.HIGH.rank for f in findings if "chain.forward" in f.message)
    unknown = b"\x80\x02}X\x01\x00\x00\x00fcnolib.mod\nfunc\ns."
    _, findings = scan_data(unknown, "m.pkl")
    assert any(f.severity.rank >= Severity.HIGH.rank for f in findings if "nolib.mod.func" in f.message)
