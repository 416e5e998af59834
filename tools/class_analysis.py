"""Static analysis of library source (ast only, never imported): what reconstructing or calling each class
(and calling each function) runs, and whether that reaches a dangerous sink within a bounded call depth.

Used by tools/gen_class_policies.py. What the unpickler runs (CPython Lib/pickle.py, Modules/_pickle.c):
- NEWOBJ / NEWOBJ_EX / copyreg.__newobj__ / _reconstructor's class: `cls.__new__(cls, *args)` only;
- BUILD: `getattr(inst, "__setstate__")` (a class `__getattr__` runs when there is none), then either
  `__setstate__(state)` or an update of `inst.__dict__` plus `setattr` for slot state (`__setattr__`);
- later, `__del__` when the rebuilt object is collected (it acts on the pickled state);
- REDUCE / INST / OBJ of a class: `type.__call__`, i.e. `__new__` then `__init__` (and a dataclass'
  `__post_init__`), or the metaclass' own `__call__`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

SAFE, UNKNOWN, SINK = "s", "u", "x"
_RANK = {SAFE: 0, UNKNOWN: 1, SINK: 2}
MAX_DEPTH = 8

# Sinks by fully qualified name or dotted prefix: process, eval/exec/compile, import machinery, file and
# network IO, native code, other deserializers.
SINKS: dict[str, str] = {
    "builtins.eval": "eval", "builtins.exec": "exec", "builtins.compile": "compile",
    "builtins.__import__": "import machinery", "builtins.open": "file IO", "builtins.input": "stdin",
    "builtins.breakpoint": "debugger",
    "os": "os access", "posix": "os access", "nt": "os access", "subprocess": "process", "pty": "process",
    "socket": "network", "ssl": "network", "urllib": "network", "http.client": "network", "http.server": "network",
    "requests": "network", "httpx": "network", "urllib3": "network", "aiohttp": "network", "ftplib": "network",
    "smtplib": "network", "xmlrpc": "network", "webbrowser": "process",
    "huggingface_hub": "network (hub download)", "fsspec": "file/network IO",
    "importlib": "import machinery", "pkgutil": "import machinery", "runpy": "code execution",
    "imp": "import machinery", "zipimport": "import machinery", "sys.modules": "import machinery",
    "sys.path": "import machinery", "code": "code execution", "codeop": "code execution",
    "ctypes": "native code", "_ctypes": "native code", "cffi": "native code",
    "pickle": "pickle deserializer", "_pickle": "pickle deserializer", "cPickle": "pickle deserializer",
    "dill": "pickle deserializer", "cloudpickle": "pickle deserializer", "marshal": "marshal deserializer",
    "shelve": "pickle deserializer", "joblib.load": "joblib deserializer",
    "joblib.numpy_pickle.load": "joblib deserializer", "numpy.load": "numpy loader",
    "numpy.fromfile": "file IO", "numpy.loadtxt": "file IO", "numpy.genfromtxt": "file IO",
    "numpy.memmap": "file IO", "numpy.lib.npyio": "file IO", "numpy.ctypeslib": "native code",
    "numpy.DataSource": "file/network IO", "torch.load": "torch deserializer", "torch.jit.load": "torch deserializer",
    "torch.hub": "network (hub download)", "torch.ops.load_library": "native code",
    "torch.serialization.load": "torch deserializer", "torch.package": "torch deserializer",
    "yaml.load": "yaml deserializer", "yaml.unsafe_load": "yaml deserializer", "yaml.full_load": "yaml deserializer",
    "pandas.read_pickle": "pickle deserializer", "pandas.read_csv": "file IO", "pandas.eval": "eval",
    "h5py.File": "file IO", "io.open": "file IO", "io.FileIO": "file IO", "_io": "file IO", "codecs.open": "file IO",
    "shutil": "file IO", "tempfile": "file IO", "zipfile": "file IO", "tarfile": "file IO", "gzip.open": "file IO",
    "bz2.open": "file IO", "lzma.open": "file IO", "glob": "file IO", "linecache": "file IO",
    "tokenize.open": "file IO", "sqlite3": "file IO", "dbm": "file IO", "mmap": "file IO",
    "multiprocessing": "process", "concurrent.futures.process": "process", "threading.Thread": "thread",
    "logging.config": "code execution", "jinja2": "template execution", "inspect.getsource": "file IO",
    "sys.settrace": "interpreter state", "sys.setprofile": "interpreter state", "atexit": "interpreter state",
    "signal": "interpreter state", "setuptools": "process", "pip": "process",
    # model formulas are Python expressions evaluated in a captured namespace (patsy EvalFactor, formulaic)
    "patsy.dmatrix": "formula evaluation (eval)", "patsy.dmatrices": "formula evaluation (eval)",
    "patsy.highlevel": "formula evaluation (eval)", "patsy.eval": "formula evaluation (eval)",
    "patsy.build": "formula evaluation (eval)", "patsy.incr_dbuilder": "formula evaluation (eval)",
    "patsy.incr_dbuilders": "formula evaluation (eval)", "formulaic.model_matrix": "formula evaluation (eval)",
    "formulaic.Formula": "formula evaluation (eval)", "formulaic.formula": "formula evaluation (eval)",
    "formulaic.model_spec": "formula evaluation (eval)", "formulaic.ModelSpec": "formula evaluation (eval)",
}
# names under a sink prefix that only compute on strings or read process state
SINK_EXCEPTIONS = frozenset({
    "os.path.join", "os.path.basename", "os.path.dirname", "os.path.splitext", "os.path.split", "os.path.normpath",
    "os.path.normcase", "os.path.sep", "os.sep", "os.linesep", "os.fspath", "os.getenv", "os.environ",
    "os.environ.get", "os.getpid", "os.cpu_count", "os.PathLike", "os.name", "os.curdir", "os.pardir",
    "importlib.util.find_spec", "importlib.metadata.version", "pickle.dumps", "pickle.PicklingError",
    "pickle.UnpicklingError", "pickle.HIGHEST_PROTOCOL", "pickle.DEFAULT_PROTOCOL", "cloudpickle.dumps",
    "marshal.dumps", "sys.modules.get", "urllib.parse", "pickle.Pickler", "pickle.PickleError",
    "os.path.abspath", "os.path.expanduser", "os.path.relpath",
    "os.path.isabs", "os.path.commonpath", "os.path.commonprefix",
})
# Method names that, called on a value of unknown type, may load, open, run or fetch something
SINK_METHODS = frozenset({
    "load", "loads", "open", "read_text", "read_bytes", "write_text", "write_bytes", "system", "popen", "exec",
    "eval", "urlopen", "download", "from_pretrained", "from_file", "load_model", "load_file", "import_module",
    "unlink", "rmtree", "mkdir", "makedirs", "communicate", "spawn", "connect", "send", "recv", "find_class",
    "load_library", "run_path", "run_module", "exec_module", "load_module", "loadtxt", "fromfile",
})
# Modules whose functions not found in the analyzed source (C extensions, builtins) compute on data only,
# unless a SINKS entry says otherwise. Anything else unresolvable is UNKNOWN.
TRUSTED_EXTERNAL = (
    "builtins", "math", "cmath", "numbers", "collections", "itertools", "functools", "operator", "copy",
    "warnings", "logging", "typing", "typing_extensions", "dataclasses", "enum", "abc", "re", "string",
    "textwrap", "json", "struct", "array", "datetime", "time", "random", "hashlib", "weakref", "threading",
    "contextlib", "inspect", "numpy", "scipy", "torch", "pandas", "decimal", "fractions", "uuid", "bisect",
    "heapq", "statistics", "types", "copyreg", "sys", "io", "base64", "binascii", "zlib", "unicodedata",
    "pathlib", "posixpath", "locale", "gc", "platform", "packaging", "__future__", "_thread", "queue",
)
SAFE_BUILTIN_CALLS = frozenset({
    "isinstance", "issubclass", "len", "hasattr", "callable", "id", "hash", "repr", "str", "int", "float", "bool",
    "list", "dict", "tuple", "set", "frozenset", "bytes", "bytearray", "range", "enumerate", "zip", "sorted",
    "reversed", "min", "max", "sum", "any", "all", "abs", "round", "divmod", "pow", "type", "object", "super",
    "iter", "next", "map", "filter", "print", "format", "ord", "chr", "slice", "property", "staticmethod",
    "classmethod", "NotImplementedError", "ValueError", "TypeError", "KeyError", "RuntimeError",
    "AttributeError", "IndexError", "Exception", "AssertionError", "complex", "memoryview", "dir", "delattr",
})
# Bases outside the analyzed source whose construction hooks are known: none of them does anything but
# store data (object.__new__, dict / list / tuple storage, Enum lookups, exceptions).
SAFE_EXTERNAL_BASES = frozenset({
    "builtins.object", "builtins.dict", "builtins.list", "builtins.tuple", "builtins.set", "builtins.frozenset",
    "builtins.int", "builtins.float", "builtins.str", "builtins.bytes", "builtins.Exception",
    "builtins.BaseException", "builtins.ValueError", "builtins.TypeError", "builtins.RuntimeError",
    "builtins.KeyError", "builtins.AttributeError", "builtins.NotImplementedError", "builtins.IndexError",
    "builtins.Warning", "builtins.UserWarning", "builtins.DeprecationWarning", "builtins.FutureWarning",
    "builtins.LookupError", "builtins.ImportError", "builtins.OSError", "builtins.AssertionError",
    "typing.Generic", "typing.Protocol", "typing.NamedTuple", "typing.TypedDict", "typing.Any",
    "typing_extensions.Protocol", "typing_extensions.TypedDict", "abc.ABC", "abc.ABCMeta", "enum.Enum",
    "enum.IntEnum", "enum.Flag", "enum.IntFlag", "enum.StrEnum", "collections.OrderedDict",
    "collections.defaultdict", "collections.Counter", "collections.deque", "collections.UserDict", "collections.UserList", "collections.abc.Mapping",
    "collections.abc.MutableMapping", "collections.abc.Sequence", "collections.abc.Iterable",
    "collections.abc.Iterator", "collections.abc.Callable", "collections.abc.Set", "collections.abc.Sized",
    "collections.abc.Container", "collections.abc.Hashable", "collections.abc.MutableSequence",
    "collections.abc.MutableSet", "collections.abc.Collection", "numbers.Number", "numbers.Real",
    "numbers.Integral", "typing.Mapping", "typing.Sequence", "typing.Iterable", "typing.Callable",
    "typing.Dict", "typing.List", "typing.Tuple", "typing.Optional", "typing.Union",
    "threading.local", "_thread._local",  # per-thread attribute storage, C __new__
    # the collections.abc ABCs under their pre-3.10 `collections.X` names (gensim 3.x Dictionary(Mapping))
    "collections.Mapping", "collections.MutableMapping", "collections.Sequence", "collections.MutableSequence",
    "collections.Iterable", "collections.Iterator", "collections.Set", "collections.MutableSet",
    "collections.Sized", "collections.Container", "collections.Hashable", "collections.Callable",
})
SAFE_METACLASSES = frozenset({"abc.ABCMeta", "builtins.type", "enum.EnumMeta", "enum.EnumType"})
HOOKS = ("__new__", "__setstate__", "__getattr__", "__setattr__", "__del__", "__init__", "__post_init__")


class ModuleSource:
    """Modules by dotted name, parsed on first use from `sources` ({name: (lib, is_pkg, read())}); the parsed
    cache is dropped when it grows past `keep` modules (a 300 MB tree of ASTs does not fit in memory)."""

    def __init__(self, sources: dict[str, tuple[str, bool, object]], keep: int = 1500) -> None:
        self.sources = sources
        self.keep = keep
        self._cache: dict[str, Module | None] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.sources

    def get(self, name: str) -> Module | None:
        if name in self._cache:
            return self._cache[name]
        src = self.sources.get(name)
        if src is None:
            return None
        if len(self._cache) >= self.keep:
            self._cache.clear()
        lib, is_pkg, read = src
        m = parse_module(name, lib, read(), is_pkg)  # type: ignore[operator]
        self._cache[name] = m
        return m

    @classmethod
    def of(cls, modules: dict[str, Module]) -> ModuleSource:
        out = cls({})
        for name, m in modules.items():
            out.sources[name] = (m.lib, m.is_pkg, None)
            out._cache[name] = m
        out.keep = 1 << 30
        return out


@dataclass
class Module:
    name: str
    lib: str
    is_pkg: bool
    imports: dict[str, str] = field(default_factory=dict)
    stars: list[str] = field(default_factory=list)
    funcs: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    assigns: dict[str, ast.expr] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    level: str                   # SAFE | UNKNOWN | SINK
    path: tuple[str, ...] = ()   # the call chain to the sink / the unresolved thing

    def worse(self, other: Verdict) -> bool:
        return _RANK[self.level] > _RANK[other.level]

    def reason(self) -> str:
        if self.level == SAFE:
            return ""
        head = "reaches" if self.level == SINK else "cannot resolve"
        return f"{head} {self.path[-1]} via {' -> '.join(self.path[:-1])}" if len(self.path) > 1 else \
            f"{head} {self.path[-1] if self.path else '?'}"


def worst(vs: Iterable[Verdict]) -> Verdict:
    out = Verdict(SAFE)
    for v in vs:
        if v.worse(out):
            out = v
            if v.level == SINK:
                break
    return out


def parse_module(name: str, lib: str, source: str, is_pkg: bool) -> Module | None:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    m = Module(name, lib, is_pkg)
    package = name if is_pkg else name.rpartition(".")[0]
    for node in _toplevel(tree.body):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    m.imports[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    m.imports.setdefault(top, top)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(package, node.module, node.level)
            if base is None:
                continue
            for a in node.names:
                if a.name == "*":
                    m.stars.append(base)
                else:
                    m.imports[a.asname or a.name] = f"{base}.{a.name}"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            m.funcs[node.name] = node
        elif isinstance(node, ast.ClassDef):
            m.classes[node.name] = node
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            m.assigns[node.targets[0].id] = node.value
    return m


def _toplevel(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, including those inside if / try blocks (version-dependent imports)."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _toplevel(node.body)
            yield from _toplevel(node.orelse)
        elif isinstance(node, ast.Try):
            yield from _toplevel(node.body)
            for h in node.handlers:
                yield from _toplevel(h.body)
            yield from _toplevel(node.orelse)
        else:
            yield node


def _absolute(package: str, module: str | None, level: int) -> str | None:
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return None
    base = parts[:len(parts) - (level - 1)]
    if module:
        base.append(module)
    return ".".join(base) or None


def _all_names(mod: Module) -> frozenset[str] | None:
    """A module's literal `__all__`, or None."""
    v = mod.assigns.get("__all__")
    if isinstance(v, (ast.List, ast.Tuple)) and all(isinstance(e, ast.Constant) and isinstance(e.value, str)
                                                    for e in v.elts):
        return frozenset(e.value for e in v.elts)  # type: ignore[misc]
    return None


def _safe_base(fq: str) -> bool:
    return fq in SAFE_EXTERNAL_BASES or (fq.startswith("builtins.") and fq.endswith(("Error", "Warning", "Exception")))


def _sink(fq: str) -> str | None:
    """The sink kind of a name: the longest matching entry of SINKS or SINK_EXCEPTIONS decides."""
    parts = fq.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in SINK_EXCEPTIONS:
            return None
        what = SINKS.get(prefix)
        if what is not None:
            return what
    return None


def _trusted_external(fq: str) -> bool:
    return fq.split(".")[0] in TRUSTED_EXTERNAL


class Analyzer:
    """Resolves names across every parsed module and judges classes and functions."""

    def __init__(self, modules: ModuleSource, trusted: dict[str, str] | None = None) -> None:
        self.modules = modules
        # hand-reviewed classes (the allow list): {name: "construct" | "call"} — their own hooks are trusted
        self.trusted = trusted or {}
        self._memo: dict[tuple[str, int, int, str, tuple[tuple[str, str], ...]], Verdict] = {}
        self._busy: set[tuple[str, int, int, str, tuple[tuple[str, str], ...]]] = set()
        self._mro: dict[str, tuple[list[str], str | None]] = {}
        self._lookups: dict[str, tuple[str, object, Module | None]] = {}
        self._stars: dict[str, dict[str, str]] = {}

    # -- name resolution ---------------------------------------------------------------------------
    def lookup(self, fq: str, depth: int = 0, seen: set[str] | None = None) -> tuple[str, object, Module | None]:
        """('func'|'class'|'module'|'value'|'missing', node-or-name, module) for a fully qualified name."""
        hit = self._lookups.get(fq)
        if hit is not None:
            return hit
        if seen is None:
            seen = set()
        if depth > 24 or fq in seen:
            return "missing", fq, None
        seen.add(fq)
        res = self._lookup(fq, depth, seen)
        self._lookups[fq] = res  # a cycle cut may cache 'missing' for a name: unresolved, judged conservatively
        return res

    def _lookup(self, fq: str, depth: int, seen: set[str]) -> tuple[str, object, Module | None]:
        parts = fq.split(".")
        for i in range(len(parts), 0, -1):
            mod = self.modules.get(".".join(parts[:i]))
            if mod is None:
                continue
            rest = parts[i:]
            if not rest:
                return "module", mod.name, mod
            head, tail = rest[0], rest[1:]
            if head in mod.classes:
                return self._in_class(f"{mod.name}.{head}", mod, mod.classes[head], tail)
            if head in mod.funcs:
                return ("func", mod.funcs[head], mod) if not tail else ("missing", fq, None)
            if head in mod.imports:
                target = mod.imports[head]
                if target != fq:
                    return self.lookup(".".join([target, *tail]), depth + 1, seen)
            if head in mod.assigns:
                v = mod.assigns[head]
                if isinstance(v, (ast.Name, ast.Attribute)):
                    target = self.resolve_expr(v, mod, frozenset())
                    if target and target != fq:
                        return self.lookup(".".join([target, *tail]), depth + 1, seen)
                return "value", fq, mod
            target = self._star_names(mod.name).get(head) if mod.stars else None
            if target is not None and target != fq:
                return self.lookup(".".join([target, *tail]), depth + 1, seen)
            fwd = self.forwards_to(mod)
            if fwd is not None and f"{fwd}.{head}" != fq:
                return self.lookup(".".join([fwd, head, *tail]), depth + 1, seen)
            if f"{mod.name}.{head}" in self.modules:
                continue
            return "missing", fq, None
        return "missing", fq, None

    def forwards_to(self, mod: Module) -> str | None:
        """The module a PEP 562 module `__getattr__` forwards every name to (`def __getattr__(name): return
        getattr(_classes, name)`: scikit-learn 0.22's deprecated `sklearn.svm.classes`), or None."""
        f = mod.funcs.get("__getattr__")
        if f is None or not f.args.args:
            return None
        body = [b for b in f.body if not (isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant))]
        if len(body) != 1 or not isinstance(body[0], ast.Return):
            return None
        r = body[0].value
        if not (isinstance(r, ast.Call) and isinstance(r.func, ast.Name) and r.func.id == "getattr"
                and len(r.args) == 2 and isinstance(r.args[1], ast.Name) and r.args[1].id == f.args.args[0].arg):
            return None
        target = self.resolve_expr(r.args[0], mod, frozenset())
        return target if target and target in self.modules and target != mod.name else None

    def _star_names(self, name: str, busy: frozenset[str] = frozenset()) -> dict[str, str]:
        """{public name: where it comes from} for what `from X import *` brings into module `name`."""
        hit = self._stars.get(name)
        if hit is not None:
            return hit
        out: dict[str, str] = {}
        mod = self.modules.get(name)
        if mod is not None and name not in busy:
            for star in mod.stars:
                src = self.modules.get(star)
                if src is None:
                    continue
                listed = _all_names(src)  # `__all__` decides what `import *` brings, private names included
                for n in (*src.classes, *src.funcs, *src.assigns):
                    if (n in listed) if listed is not None else not n.startswith("_"):
                        out.setdefault(n, f"{star}.{n}")
                for n, t in src.imports.items():
                    if (n in listed) if listed is not None else not n.startswith("_"):
                        out.setdefault(n, t)
                for n, t in self._star_names(star, busy | {name}).items():
                    out.setdefault(n, t)
        if not busy:
            self._stars[name] = out
        return out

    def _in_class(self, cls_fq: str, mod: Module, node: ast.ClassDef, tail: list[str]) -> tuple[str, object, Module]:
        if not tail:
            return "class", cls_fq, mod
        for item in node.body:
            if isinstance(item, ast.ClassDef) and item.name == tail[0]:
                return self._in_class(f"{cls_fq}.{item.name}", mod, item, tail[1:])
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == tail[0] and len(tail) == 1:
                return "func", item, mod
        return "value", cls_fq, mod

    def class_node(self, fq: str) -> tuple[ast.ClassDef, Module] | None:
        parts = fq.split(".")
        for i in range(len(parts) - 1, 0, -1):
            mod = self.modules.get(".".join(parts[:i]))
            if mod is None:
                continue
            node: ast.ClassDef | None = mod.classes.get(parts[i])
            for name in parts[i + 1:]:
                node = next((x for x in (node.body if node else []) if isinstance(x, ast.ClassDef) and x.name == name),
                            None)
            return (node, mod) if node is not None else None
        return None

    def canonical(self, fq: str) -> str:
        """The defining name of a class reached through re-exports."""
        kind, node, _ = self.lookup(fq)
        return node if kind == "class" and isinstance(node, str) else fq

    def resolve_expr(self, e: ast.expr, mod: Module, local: frozenset[str]) -> str | None:
        """Fully qualified name of a module-level Name / Attribute chain (None for local values)."""
        attrs: list[str] = []
        while isinstance(e, ast.Attribute):
            attrs.append(e.attr)
            e = e.value
        if not isinstance(e, ast.Name) or e.id in local:
            return None
        n = e.id
        if n in mod.imports:
            base = mod.imports[n]
        elif n in mod.classes or n in mod.funcs or n in mod.assigns:
            base = f"{mod.name}.{n}"
        elif mod.stars and n in self._star_names(mod.name):
            base = self._star_names(mod.name)[n]
        else:
            base = f"builtins.{n}"
        return ".".join([base, *reversed(attrs)])

    # -- class hierarchy ---------------------------------------------------------------------------
    def mro(self, fq: str) -> tuple[list[str], str | None]:
        """Classes in lookup order (bases as written, C3-like left-to-right) and the first base that could not
        be resolved to analyzed source or a known builtin base (None when all resolved)."""
        hit = self._mro.get(fq)
        if hit is not None:
            return hit
        self._mro[fq] = ([fq], None)  # cycle guard
        found = self.class_node(fq)
        if found is None:
            # a hand-reviewed class implemented in C (numpy.ndarray, pandas' Cython BlockManager) is a known base
            res: tuple[list[str], str | None] = ([], None if _safe_base(fq) or fq in self.trusted else fq)
            self._mro[fq] = res
            return res
        node, mod = found
        order = [fq]
        unresolved: str | None = None
        for b in node.bases:
            if isinstance(b, ast.Subscript):  # Generic[T], Dict[str, Any]
                b = b.value
            if isinstance(b, ast.Call):  # namedtuple('X', ...) / NamedTuple('X', [...]): a tuple
                made = self.resolve_expr(b.func, mod, frozenset())
                if made in ("collections.namedtuple", "typing.NamedTuple"):
                    continue
                unresolved = unresolved or ast.unparse(b)[:80]
                continue
            base = self.resolve_expr(b, mod, frozenset())
            if base is None:
                unresolved = unresolved or ast.unparse(b)
                continue
            base = self.canonical(base)
            sub, bad = self.mro(base)
            for c in sub:
                if c not in order:
                    order.append(c)
            unresolved = unresolved or bad
        res = (order, unresolved)
        self._mro[fq] = res
        return res

    def find(self, cls: str, name: str, after: str | None = None) -> tuple[str, ast.FunctionDef, Module] | str | None:
        """(owner, method, module) of `name` in the MRO (after `after` for super()), the unresolved base's name
        when lookup reaches it first, or None (object's default)."""
        order, bad = self.mro(cls)
        if after is not None and after in order:
            order = order[order.index(after) + 1:]
        for owner in order:
            found = self.class_node(owner)
            if found is None:
                continue
            node, mod = found
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == name:
                    return owner, item, mod  # type: ignore[return-value]
                if isinstance(item, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in item.targets):
                    return f"{owner}.{name} (assigned)"
        return bad

    # -- verdicts ----------------------------------------------------------------------------------
    def hook(self, cls: str, name: str, label: str, depth: int = 0) -> Verdict:
        f = self.find(cls, name)
        if f is None:
            return Verdict(SAFE)
        if isinstance(f, str):
            return Verdict(UNKNOWN, (label, f"{f} (base not analyzed)"))
        owner, node, mod = f
        trust = self.trusted.get(owner)
        if trust == "call" or (trust == "construct" and name != "__init__"):
            return Verdict(SAFE)
        return self.function(node, mod, cls, owner, (f"{owner.rsplit('.', 1)[-1]}.{name}",), depth)

    def construct(self, cls: str) -> Verdict:
        """NEWOBJ then BUILD: __new__, then __setstate__ or a __dict__ update (plus __getattr__ looked up for
        __setstate__, __setattr__ for slot state)."""
        if cls in self.trusted:  # hand-reviewed (an alias old pickles name resolves to the same class)
            return Verdict(SAFE)
        # the finalizer runs on the pickled state too, whenever the object is collected (sklearn-crfsuite's
        # FileResource unlinks the path its state names)
        new = worst([self.hook(cls, "__new__", "__new__"), self.hook(cls, "__del__", "__del__")])
        if self.find(cls, "__setstate__") is not None:
            # found by ordinary lookup: __getattr__ is never asked; its body's own assignments reach __setattr__
            return worst([new, self.hook(cls, "__setstate__", "__setstate__")])
        return worst([new, self.hook(cls, "__getattr__", "__getattr__"), self.hook(cls, "__setattr__", "__setattr__")])

    def call_class(self, cls: str, depth: int = 0, trail: tuple[str, ...] = ()) -> Verdict:
        """cls(*args): the metaclass' __call__, __new__, __init__, a dataclass' __post_init__."""
        if self.trusted.get(cls) == "call":
            return Verdict(SAFE)
        meta = self._metaclass(cls)
        if meta is not None:
            return Verdict(UNKNOWN, (*trail, f"{cls}(...)", f"metaclass {meta}"))
        out = []
        for name in ("__new__", "__init__", "__post_init__", "__setattr__"):
            v = self.hook(cls, name, name, depth)
            if v.level != SAFE:
                out.append(Verdict(v.level, (*trail, *v.path)))
        return worst(out)

    def _metaclass(self, cls: str) -> str | None:
        order, _ = self.mro(cls)
        for c in order:
            found = self.class_node(c)
            if found is None:
                continue
            node, mod = found
            for kw in node.keywords:
                if kw.arg == "metaclass":
                    meta = self.resolve_expr(kw.value, mod, frozenset())
                    if meta is None:
                        return ast.unparse(kw.value)
                    meta = self.canonical(meta)
                    if meta in SAFE_METACLASSES:
                        continue
                    f = self.find(meta, "__call__")
                    if f is None:
                        continue
                    if isinstance(f, str) and f in SAFE_METACLASSES:
                        continue
                    return meta
        return None

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, mod: Module, cls: str | None,
                 owner: str | None, trail: tuple[str, ...], depth: int = 0,
                 consts: tuple[tuple[str, str], ...] = (), wrapper: bool = False) -> Verdict:
        """`consts`: parameters bound to constant strings at the call site (numpy's _wrapfunc(a, 'sum')).
        `wrapper`: judged as a decorator: calling the function it wraps (a parameter) is judged elsewhere."""
        key = (mod.name, node.lineno, node.col_offset, cls or "", consts + (("<wrapper>", ""),) if wrapper else consts)
        hit = self._memo.get(key)
        if hit is not None:
            return Verdict(hit.level, (*trail[:-1], *hit.path)) if hit.level != SAFE else hit
        if key in self._busy:
            return Verdict(SAFE)  # recursion: the cycle adds no sink of its own
        if depth > MAX_DEPTH:
            return Verdict(UNKNOWN, (*trail, f"call depth {MAX_DEPTH} exceeded"))
        self._busy.add(key)
        try:
            v = self._body(node, mod, cls, owner, trail, depth, dict(consts), wrapper)
        finally:
            self._busy.discard(key)
        if not any("call depth" in p for p in v.path):
            self._memo[key] = Verdict(v.level, (trail[-1], *v.path[len(trail):])) if v.level != SAFE else v
        return v

    def _body(self, node: ast.FunctionDef | ast.AsyncFunctionDef, mod: Module, cls: str | None,
              owner: str | None, trail: tuple[str, ...], depth: int, consts: dict[str, str],
              wrapper: bool = False) -> Verdict:
        args = node.args
        params = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
        if args.vararg:
            params.append(args.vararg.arg)
        if args.kwarg:
            params.append(args.kwarg.arg)
        is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)
        me = params[0] if params and cls and not is_static else None
        # one walk serves locals, imports and the calls below; the function's own decorators ran at import
        # time: what runs on a call is the wrapper they return (judged below)
        nodes = _walk_body(node)
        imports = _local_imports(nodes, mod)
        if imports:  # imports inside the function resolve like module-level ones
            mod = Module(mod.name, mod.lib, mod.is_pkg, {**mod.imports, **imports}, mod.stars, mod.funcs,
                         mod.classes, mod.assigns)
        local = (frozenset(params) | _assigned(nodes, node)) - imports.keys()
        fn = _FnInfo(node, nodes, consts)
        fn.types = self._local_types(nodes, mod, local)
        if wrapper:
            fn.wrapped = _wrapped_names(nodes)
        out: list[Verdict] = [self._decorators(node, mod, local, trail, depth)]
        for sub in nodes:
            if isinstance(sub, ast.Call):
                v = self._call(sub, mod, cls, owner, me, local, trail, depth, fn)
            elif isinstance(sub, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and cls and me:
                targets = sub.targets if isinstance(sub, ast.Assign) else [sub.target]
                v = Verdict(SAFE)
                if any(isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == me
                       for t in targets) and owner is not None and node.name != "__setattr__":
                    v = self.hook(cls, "__setattr__", "__setattr__", depth + 1)
                    if v.level != SAFE:
                        v = Verdict(v.level, (*trail, *v.path))
            else:
                continue
            if v.level == SINK:
                return v
            out.append(v)
        return worst(out)

    def _call(self, c: ast.Call, mod: Module, cls: str | None, owner: str | None, me: str | None,
              local: frozenset[str], trail: tuple[str, ...], depth: int, fn: _FnInfo | None = None) -> Verdict:
        f = c.func
        # super().m(...)
        if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Call) and isinstance(f.value.func, ast.Name)
                and f.value.func.id == "super" and cls):
            m = self.find(cls, f.attr, after=owner)
            return self._method(m, f.attr, cls, trail, depth, c, fn)
        # self.m(...) / cls.m(...) / type(self).m(...)
        if isinstance(f, ast.Attribute) and cls and isinstance(f.value, ast.Name) and f.value.id == me:
            m = self.find(cls, f.attr)
            if m is None:
                return Verdict(UNKNOWN, (*trail, f"self.{f.attr}() (a value held by the instance)"))
            return self._method(m, f.attr, cls, trail, depth, c, fn)
        if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and fn is not None
                and f.value.id in fn.types):
            # mgr = FormulaManager(); mgr.get_matrices(...): a method of a class built right here
            typ = fn.types[f.value.id]
            m = self.find(typ, f.attr)
            if m is not None:
                return self._method(m, f.attr, typ, trail, depth, c, fn)
        if isinstance(f, ast.Name) and f.id == me and cls:  # cls(...) in a classmethod
            return self.call_class(cls, depth + 1, trail)
        if isinstance(f, ast.Name) and f.id in ("getattr", "setattr") and f.id not in local and f.id not in mod.funcs:
            if f.id == "getattr" and len(c.args) >= 2 and fn is not None:
                return _getattr_verdict(c, fn, trail)
            return Verdict(SAFE)
        if (isinstance(f, ast.Call) and isinstance(f.func, ast.Name) and f.func.id == "getattr"
                and "getattr" not in local and fn is not None):
            return Verdict(SAFE)  # getattr(obj, name)(...): judged where getattr is called (it is called)
        fq = self.resolve_expr(f, mod, local)
        if fq is None:
            if isinstance(f, ast.Attribute):
                return _value_method(f.attr, trail)
            if isinstance(f, ast.Name) and fn is not None and f.id in fn.wrapped:
                return Verdict(SAFE)  # a decorator's wrapper calling the function it wraps
            if isinstance(f, ast.Name) and fn is not None and f.id in fn.bound_methods:
                # `transpose = a.transpose; transpose(order)`: a method of a value, judged by its name
                return worst(_value_method(n, trail) for n in fn.bound_methods[f.id])
            return Verdict(UNKNOWN, (*trail, f"calls a value ({ast.unparse(f)[:60]})"))
        return self.call_name(fq, trail, depth, c, fn)

    def _local_types(self, nodes: list[ast.AST], mod: Module, local: frozenset[str]) -> dict[str, str]:
        """Locals bound once, to an instance of a class of the analyzed source: {local: class}."""
        stores: dict[str, int] = {}
        for sub in nodes:
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                stores[sub.id] = stores.get(sub.id, 0) + 1
        out: dict[str, str] = {}
        for sub in nodes:
            if (isinstance(sub, ast.Assign) and len(sub.targets) == 1 and isinstance(sub.targets[0], ast.Name)
                    and stores.get(sub.targets[0].id) == 1 and isinstance(sub.value, ast.Call)
                    and isinstance(sub.value.func, (ast.Name, ast.Attribute))):
                fq = self.resolve_expr(sub.value.func, mod, local)
                if fq is None:
                    continue
                kind, target, _ = self.lookup(fq)
                if kind == "class" and isinstance(target, str):
                    out[sub.targets[0].id] = target
        return out

    def _decorators(self, node: ast.FunctionDef | ast.AsyncFunctionDef, mod: Module, local: frozenset[str],
                    trail: tuple[str, ...], depth: int) -> Verdict:
        """A call of a decorated function runs the wrappers: a decorator defined as a function in the analyzed
        source is judged as a wrapper; anything else as a call of the decorator expression (conservative)."""
        out = []
        for d in node.decorator_list:
            target = d.func if isinstance(d, ast.Call) else d
            fq = self.resolve_expr(target, mod, frozenset())
            if fq in BENIGN_DECORATORS or (fq or "").split(".")[0] in ("typing", "typing_extensions", "abc"):
                continue
            kind, dnode, dmod = self.lookup(fq) if fq else ("missing", None, None)
            if kind == "func" and dmod is not None:
                out.append(self.function(dnode, dmod, None, None, (*trail, f"@{fq}"), depth + 1,  # type: ignore[arg-type]
                                         wrapper=True))
            elif isinstance(d, ast.Call):
                out.append(self._call(d, mod, None, None, None, local, trail, depth))
            elif fq is not None and not _trusted_external(fq):
                out.append(Verdict(UNKNOWN, (*trail, f"@{fq} (decorator not analyzed)")))
        return worst(out)

    def _method(self, m: object, name: str, cls: str, trail: tuple[str, ...], depth: int,
                call: ast.Call | None = None, fn: _FnInfo | None = None) -> Verdict:
        if m is None:
            return Verdict(SAFE)
        if isinstance(m, str):
            if _safe_base(m) or m.startswith("builtins."):
                return Verdict(SAFE)
            return Verdict(UNKNOWN, (*trail, f"{m}.{name} (base not analyzed)"))
        owner, node, mod = m  # type: ignore[misc]
        if self.trusted.get(owner) == "call" or (self.trusted.get(owner) == "construct" and name != "__init__"):
            return Verdict(SAFE)
        return self.function(node, mod, cls, owner, (*trail, f"{owner.rsplit('.', 1)[-1]}.{name}"), depth + 1,
                             _const_args(node, call, bound=True, known=fn.consts if fn else None))

    def call_name(self, fq: str, trail: tuple[str, ...], depth: int, call: ast.Call | None = None,
                  fn: _FnInfo | None = None) -> Verdict:
        what = _sink(fq)
        if what is not None:
            return Verdict(SINK, (*trail, f"{fq} ({what})"))
        kind, node, mod = self.lookup(fq)
        if kind == "func" and mod is not None:
            owner = None
            return self.function(node, mod, None, owner, (*trail, fq), depth + 1,  # type: ignore[arg-type]
                                 _const_args(node, call, bound=False,  # type: ignore[arg-type]
                                             known=fn.consts if fn else None))
        if kind == "class":
            name = str(node)
            what = _sink(name)
            if what is not None:
                return Verdict(SINK, (*trail, f"{name} ({what})"))
            trust = self.trusted.get(name)
            if trust == "call":
                return Verdict(SAFE)
            return self.call_class(name, depth + 1, (*trail, f"{name.rsplit('.', 1)[-1]}()"))
        if kind == "missing" and (self.trusted.get(fq) == "call" or self.trusted.get(str(node)) == "call"):
            return Verdict(SAFE)  # a hand-reviewed C class reached through a module alias (catboost's _CatBoost)
        if kind == "missing" and fq.startswith("builtins."):
            short = fq[len("builtins."):]
            exception = short.endswith(("Error", "Warning", "Exception"))  # raise ImportError(...) builds data
            return Verdict(SAFE) if short in SAFE_BUILTIN_CALLS or exception or "." in short else \
                Verdict(UNKNOWN, (*trail, fq))
        if kind == "value" and mod is not None and fq.startswith(mod.name + "."):
            return _value_method(fq.rsplit(".", 1)[-1], trail)  # a method of a module-level value (logger.info)
        if kind in ("missing", "value", "module") and _trusted_external(fq):
            return Verdict(SAFE)
        return Verdict(UNKNOWN, (*trail, f"{fq} (not in the analyzed source)"))

    def judge_function(self, fq: str) -> Verdict:
        kind, node, mod = self.lookup(fq)
        if kind != "func" or mod is None:
            return Verdict(UNKNOWN, (fq,))
        return self.function(node, mod, None, None, (fq.rsplit(".", 1)[-1],))  # type: ignore[arg-type]


BENIGN_DECORATORS = frozenset({
    "builtins.staticmethod", "builtins.classmethod", "builtins.property", "functools.wraps", "functools.cache",
    "functools.lru_cache", "functools.cached_property", "functools.singledispatch", "functools.total_ordering",
    "contextlib.contextmanager", "dataclasses.dataclass",
})


def _walk_body(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.AST]:
    """ast.walk of a function without its own decorator expressions."""
    skip = {id(d) for d in node.decorator_list}
    out: list[ast.AST] = []
    todo: list[ast.AST] = [node]
    while todo:
        n = todo.pop()
        out.append(n)
        todo.extend(c for c in ast.iter_child_nodes(n) if id(c) not in skip)
    return out


def _wrapped_names(nodes: list[ast.AST]) -> frozenset[str]:
    """In a decorator: parameters of it and its nested wrappers (the wrapped function and its arguments), and
    locals bound straight to them (`func = reason`)."""
    params: set[str] = set()
    for sub in nodes:
        if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = sub.args
            params.update(x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs))
            params.update(x.arg for x in (a.vararg, a.kwarg) if x is not None)
    for sub in nodes:
        if isinstance(sub, ast.Assign) and isinstance(sub.value, ast.Name) and sub.value.id in params:
            params.update(t.id for t in sub.targets if isinstance(t, ast.Name))
    return frozenset(params)


class _FnInfo:
    """What one function body says about its getattr calls: parents of nodes, names called or returned,
    loop variables over constant strings."""

    def __init__(self, node: ast.AST, nodes: list[ast.AST], consts: dict[str, str]) -> None:
        self.consts = consts
        self.wrapped: frozenset[str] = frozenset()
        self.types: dict[str, str] = {}  # locals holding an instance of a known class
        self.parent: dict[int, ast.AST] = {}
        self.called: set[str] = set()      # local names called, returned or handed to a call
        self.loops: dict[str, tuple[str, ...]] = {}
        for sub in nodes:
            for child in ast.iter_child_nodes(sub):
                self.parent[id(child)] = sub
            if isinstance(sub, ast.Call):
                if isinstance(sub.func, ast.Name):
                    self.called.add(sub.func.id)
                if not (isinstance(sub.func, ast.Name) and sub.func.id in _INERT_USES):
                    for a in (*sub.args, *(k.value for k in sub.keywords)):
                        if isinstance(a, ast.Name):
                            self.called.add(a.id)
                        elif isinstance(a, ast.Starred) and isinstance(a.value, ast.Name):
                            self.called.add(a.value.id)
            elif isinstance(sub, ast.Return) and isinstance(sub.value, ast.Name):
                self.called.add(sub.value.id)
            elif isinstance(sub, (ast.For, ast.comprehension)) and isinstance(sub.target, ast.Name):
                it = sub.iter
                if isinstance(it, (ast.Tuple, ast.List, ast.Set)) and it.elts and all(
                        isinstance(e, ast.Constant) and isinstance(e.value, str) for e in it.elts):
                    prev = self.loops.get(sub.target.id, ())
                    self.loops[sub.target.id] = prev + tuple(e.value for e in it.elts)  # type: ignore[misc]
                else:
                    self.loops[sub.target.id] = ("",)  # rebound from data: not a constant
        # a parameter or loop variable rebound elsewhere in the body may hold anything
        stores: dict[str, int] = {}
        for sub in nodes:
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                stores[sub.id] = stores.get(sub.id, 0) + 1
        targets: dict[str, int] = {}
        for sub in nodes:
            if isinstance(sub, (ast.For, ast.comprehension)) and isinstance(sub.target, ast.Name):
                targets[sub.target.id] = targets.get(sub.target.id, 0) + 1
        self.loops = {k: v for k, v in self.loops.items() if "" not in v and stores.get(k, 0) == targets.get(k)}
        self.consts = {k: v for k, v in consts.items() if k not in stores}
        # locals only ever bound to `<value>.<attr>`: {local: attrs}
        methods: dict[str, list[str]] = {}
        for sub in nodes:
            if isinstance(sub, ast.Assign) and len(sub.targets) == 1 and isinstance(sub.targets[0], ast.Name):
                name = sub.targets[0].id
                v = sub.value
                if isinstance(v, ast.Attribute):
                    methods.setdefault(name, []).append(v.attr)
                elif (isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "getattr"
                      and len(v.args) >= 2 and self.values(v.args[1]) is not None):
                    methods.setdefault(name, []).extend(self.values(v.args[1]) or ())  # getattr(obj, 'sum')
                else:
                    methods.setdefault(name, []).append("")
        params = {sub.arg for sub in nodes if isinstance(sub, ast.arg)}  # a caller's value may be called
        self.bound_methods = {k: tuple(v) for k, v in methods.items() if "" not in v and k not in params and
                              sum(1 for sub in nodes if isinstance(sub, ast.Assign) and sub.targets[0:1] and
                                  isinstance(sub.targets[0], ast.Name) and sub.targets[0].id == k) == stores.get(k)}

    def values(self, e: ast.expr) -> tuple[str, ...] | None:
        """The constant strings an attribute-name expression can be, or None when it may come from data."""
        if isinstance(e, ast.Constant) and isinstance(e.value, str):
            return (e.value,)
        if isinstance(e, ast.Name):
            if e.id in self.consts:
                return (self.consts[e.id],)
            return self.loops.get(e.id)
        if isinstance(e, ast.JoinedStr):
            out = [""]
            for part in e.values:
                got = self.values(part.value) if isinstance(part, ast.FormattedValue) else self.values(part)
                if got is None or len(out) * len(got) > 64:
                    return None
                out = [a + b for a in out for b in got]
            return tuple(out)
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
            left, right = self.values(e.left), self.values(e.right)
            if left is None or right is None or len(left) * len(right) > 64:
                return None
            return tuple(a + b for a in left for b in right)
        return None

    def reaches_call(self, c: ast.Call) -> bool:
        """Is the value getattr returned called, returned, stored or handed on (rather than read as data)?"""
        node: ast.AST = c
        p = self.parent.get(id(c))
        while isinstance(p, (ast.IfExp, ast.BoolOp)):  # `f = getattr(a, n) or g`: the choice is the value
            node, p = p, self.parent.get(id(p))
        if isinstance(p, ast.Call):
            if p.func is node:
                return True
            return not (isinstance(p.func, ast.Name) and p.func.id in _INERT_USES)
        if isinstance(p, (ast.Return, ast.Yield, ast.YieldFrom, ast.Lambda, ast.keyword, ast.Starred)):
            return True
        if isinstance(p, (ast.Assign, ast.AnnAssign, ast.NamedExpr)):
            targets = p.targets if isinstance(p, ast.Assign) else [p.target]
            for t in targets:
                if not isinstance(t, ast.Name) or t.id in self.called:
                    return True  # stored on an object (called later) or a local that is called
            return False
        return False


# calls that only inspect a value (never call it)
_INERT_USES = frozenset({"isinstance", "issubclass", "len", "hasattr", "callable", "id", "type", "repr", "str",
                         "bool", "print", "setattr", "hash", "format"})


def _getattr_verdict(c: ast.Call, fn: _FnInfo, trail: tuple[str, ...]) -> Verdict:
    """getattr(obj, name): with a name known to be one of some constants it is `obj.<name>` (judged like a
    method call when the result is called); with a name that may come from data, it is the classic gadget
    only when its result is called, returned or stored (read as data it runs nothing)."""
    names = fn.values(c.args[1])
    called = fn.reaches_call(c)
    if names is not None:
        return worst(_value_method(n, trail) for n in names) if called else Verdict(SAFE)
    if called:
        return Verdict(SINK, (*trail, "getattr with a computed name"))
    return Verdict(SAFE)


def _const_args(node: ast.FunctionDef | ast.AsyncFunctionDef, call: ast.Call | None,
                bound: bool, known: dict[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """Parameters of `node` that `call` binds to constant strings (bound: a method, self not passed);
    `known`: the caller's own parameters known to be constants (passed on: _wrapfunc -> _wrapit)."""
    known = known or {}

    def const(e: ast.expr) -> str | None:
        if isinstance(e, ast.Constant) and isinstance(e.value, str):
            return e.value
        return known.get(e.id) if isinstance(e, ast.Name) else None
    if call is None:
        return ()
    a = node.args
    positional = [x.arg for x in (*a.posonlyargs, *a.args)]
    if bound and positional:
        positional = positional[1:]
    names = set(positional) | {x.arg for x in a.kwonlyargs}
    out: dict[str, str] = {}
    for i, arg in enumerate(call.args):
        if isinstance(arg, ast.Starred):
            break
        v = const(arg)
        if i < len(positional) and v is not None:
            out[positional[i]] = v
    for k in call.keywords:
        v = const(k.value) if k.arg in names else None
        if v is not None:
            out[k.arg] = v  # type: ignore[index]
    return tuple(sorted(out.items()))


def _value_method(name: str, trail: tuple[str, ...]) -> Verdict:
    """A method called on a value of unknown type, judged by its name: data methods (update, copy, get,
    reshape ...) are safe; loader-like names are sinks or undecidable."""
    if name in SINK_METHODS:
        return Verdict(SINK, (*trail, f".{name}() on a value"))
    low = name.lower()
    if any(w in low for w in ("load", "open", "read", "exec", "spawn", "download", "fetch", "import", "unpickl")):
        return Verdict(UNKNOWN, (*trail, f".{name}() on a value of unknown type"))
    return Verdict(SAFE)


def _assigned(nodes: list[ast.AST], node: ast.AST) -> frozenset[str]:
    """Names bound inside a function (locals): calls through them are calls of values."""
    out: set[str] = set()
    for sub in nodes:
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            out.add(sub.id)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not node:
            out.add(sub.name)
        elif isinstance(sub, ast.arg):
            out.add(sub.arg)
        elif isinstance(sub, ast.alias):
            out.add((sub.asname or sub.name).split(".")[0])
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            out.add(sub.name)
    return frozenset(out)


def _local_imports(nodes: list[ast.AST], mod: Module) -> dict[str, str]:
    out: dict[str, str] = {}
    package = mod.name if mod.is_pkg else mod.name.rpartition(".")[0]
    for sub in nodes:
        if isinstance(sub, ast.Import):
            for a in sub.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(sub, ast.ImportFrom):
            base = _absolute(package, sub.module, sub.level)
            if base is not None:
                for a in sub.names:
                    if a.name != "*":
                        out[a.asname or a.name] = f"{base}.{a.name}"
    return out
