"""The reviewed allow-lists: the only globals a pickle stream and the only types a skops archive
may name. Exact names only — never a module prefix: ``numpy.dtype`` is allowed, the function
behind ``numpy`` + ``f2py.os.system`` is not, although both live "under numpy".

To add an entry, check that what it names can only build data: calling it (or its
``__setstate__``) must not run code, import modules, touch files or the network, or unpickle
anything itself. A model that needs more trusts it in its own config
(``models.<name>.artifact.trusted``), reviewed like this list.
"""

from __future__ import annotations

# --- pickle globals: (module, qualified name) ----------------------------------------------------

NUMPY_PICKLE_GLOBALS = frozenset(
    {
        # How numpy pickles an array: _reconstruct(ndarray, shape, dtype), then ndarray's
        # __setstate__ with raw bytes (protocol 5: _frombuffer over an in-band buffer). Object
        # arrays carry a list of already-unpickled items, never a nested pickle.
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)

BUILTIN_PICKLE_GLOBALS = frozenset(
    {
        # Containers and numbers that protocols 2–4 reach through a global (sets, complex …).
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
        ("builtins", "slice"),
        ("collections", "OrderedDict"),
        # Protocol 2 has no bytes opcode: it writes bytes as _codecs.encode(text, "latin1").
        # Encoding a string builds bytes; codec names resolve only to the stdlib encodings.
        ("_codecs", "encode"),
    }
)

SKLEARN_PICKLE_GLOBALS = frozenset(
    {
        # The estimators of the example model families. Their __setstate__ only fills __dict__.
        ("sklearn.pipeline", "Pipeline"),
        ("sklearn.preprocessing._data", "StandardScaler"),
        ("sklearn.linear_model._logistic", "LogisticRegression"),
        ("sklearn.linear_model._base", "LinearRegression"),
    }
)

PICKLE_GLOBALS: frozenset[tuple[str, str]] = (
    NUMPY_PICKLE_GLOBALS | BUILTIN_PICKLE_GLOBALS | SKLEARN_PICKLE_GLOBALS
)
"""Every global an opted-in pickle may name, unless its model trusts more."""

# --- skops types: "module.Name" as skops writes them ---------------------------------------------

SKOPS_TYPES: frozenset[str] = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.set",
        "builtins.str",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "builtins.slice",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.bool",
        "numpy.int8",
        "numpy.int16",
        "numpy.int32",
        "numpy.int64",
        "numpy.uint8",
        "numpy.uint16",
        "numpy.uint32",
        "numpy.uint64",
        "numpy.float16",
        "numpy.float32",
        "numpy.float64",
        "numpy.complex64",
        "numpy.complex128",
        "numpy.str_",
        "numpy.bytes_",
        *(f"{module}.{name}" for module, name in SKLEARN_PICKLE_GLOBALS),
    }
)
"""Every type a skops archive may name, unless its model trusts more. Functions (skops'
FunctionNode, MethodNode, PartialNode …) are names like types: none is on the list."""

SKOPS_LOADERS: frozenset[str] = frozenset(
    {
        # The node kinds of skops 0.16 whose children this scanner knows how to walk; a node of
        # any other kind (a newer skops, a hand-made schema) fails closed.
        "ObjectNode",
        "DictNode",
        "DefaultDictNode",
        "ListNode",
        "TupleNode",
        "SetNode",
        "JsonNode",
        "TypeNode",
        "SliceNode",
        "CachedNode",
        "BytesNode",
        "BytearrayNode",
        "NdArrayNode",
        "MaskedArrayNode",
        "DTypeNode",
        "RandomStateNode",
        "RandomGeneratorNode",
        "SparseMatrixNode",
        "ReduceNode",
        "TreeNode",
        "LossNode",
        "FunctionNode",
        "MethodNode",
        "PartialNode",
        "OperatorFuncNode",
        "ConstructorFromReduceNode",
    }
)

# --- wording: why a refused name is dangerous (every name off the list is refused anyway) -------

_RUNS_CODE_MODULES = frozenset(
    {
        "os",
        "posix",
        "nt",
        "subprocess",
        "pty",
        "runpy",
        "code",
        "codeop",
        "commands",
        "importlib",
        "ctypes",
        "sys",
        "shutil",
        "socket",
        "webbrowser",
        "multiprocessing",
        "asyncio",
        "operator",
        "functools",
        "copyreg",
        "timeit",
        "pdb",
        "bdb",
    }
)
_RUNS_CODE = frozenset(
    {
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "compile"),
        ("builtins", "__import__"),
        ("builtins", "getattr"),
        ("builtins", "setattr"),
        ("builtins", "open"),
        ("builtins", "breakpoint"),
        ("builtins", "input"),
        ("builtins", "globals"),
        ("builtins", "vars"),
        ("__builtin__", "eval"),
        ("__builtin__", "exec"),
        ("__builtin__", "execfile"),
    }
)
_LOADER_NAMES = frozenset(
    {
        "load",
        "loads",
        "read_pickle",
        "load_model",
        "from_file",
        "fromfile",
        "loadtxt",
        "genfromtxt",
        "memmap",
        "open",
        "open_memmap",
        "Unpickler",
        "_load",
        "read",
    }
)


def describe_global(module: str, name: str) -> str:
    """Why ``module``/``name`` is refused, in words: it runs code, loads another file, is a
    dotted path under a module, or is simply not on the list."""
    shown = display_global(module, name)
    top = module.split(".")[0]
    last = name.rsplit(".", 1)[-1]
    if (module, name) in _RUNS_CODE or top in _RUNS_CODE_MODULES:
        why = "it can run code"
    elif last in _LOADER_NAMES or top in ("pickle", "_pickle", "dill", "cloudpickle", "marshal"):
        why = "it loads another file or pickle, which this scan never sees"
    elif "." in name:
        why = f"a dotted attribute path under module {module} (only exact names are allowed)"
    else:
        why = "it is not on the allow-list"
    return f"global {shown} is refused: {why}"


def display_global(module: str, name: str) -> str:
    """``posix.system``; ``numpy:f2py.os.system`` when the name itself is a dotted path."""
    return f"{module}:{name}" if "." in name else f"{module}.{name}"
