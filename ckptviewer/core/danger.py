"""Which globals a pickle may name that would run code, touch files, processes or the network.

This is the one list. The reader never imports or calls any global (dangerous or not); the list
only decides what we *report*: a file that names one of these would do harm under plain
``torch.load(weights_only=False)`` or ``pickle.load``. Entries are module prefixes (the whole module
and its submodules) or exact ``module.name`` pairs, each with the reason shown to the user.
"""
from __future__ import annotations

# Whole modules (and their submodules): anything in them is an entry point to harm.
DANGEROUS_MODULES: dict[str, str] = {
    "os": "operating system calls (os.system, os.popen, os.remove, os.exec*)",
    "posix": "os.system and friends under their POSIX module name",
    "nt": "os.system and friends under their Windows module name",
    "subprocess": "starts processes",
    "pty": "spawns processes on a pseudo-terminal",
    "commands": "Python 2 shell commands",
    "popen2": "Python 2 process pipes",
    "platform": "platform.popen runs shell commands",
    "multiprocessing": "starts processes and unpickles what they send",
    "concurrent": "executors that run callables in threads or processes",
    "asyncio": "asyncio.subprocess and event loops that run callables",
    "threading": "starts threads that run callables",
    "_thread": "starts threads that run callables",
    "signal": "installs signal handlers",
    "importlib": "imports arbitrary modules",
    "imp": "imports arbitrary modules (Python 2/3.11)",
    "pkgutil": "imports modules by name",
    "runpy": "runs modules and scripts",
    "code": "interactive interpreter: runs source text",
    "codeop": "compiles source text",
    "ctypes": "calls native functions and writes memory",
    "_ctypes": "calls native functions and writes memory",
    "cffi": "calls native functions",
    "marshal": "loads code objects",
    "pickle": "unpickles nested data without restrictions",
    "_pickle": "unpickles nested data without restrictions",
    "cPickle": "Python 2 unpickler",
    "dill": "unpickles code",
    "cloudpickle": "unpickles code",
    "joblib": "unpickles nested data",
    "shelve": "unpickles data from a file",
    "socket": "opens network connections",
    "_socket": "opens network connections",
    "ssl": "opens network connections",
    "http": "HTTP clients and servers",
    "urllib": "downloads from the network",
    "urllib2": "Python 2 downloads",
    "urllib3": "downloads from the network",
    "requests": "downloads from the network",
    "httplib": "Python 2 HTTP",
    "ftplib": "FTP transfers",
    "smtplib": "sends mail",
    "telnetlib": "network sessions",
    "xmlrpc": "remote procedure calls",
    "webbrowser": "opens URLs in a browser",
    "shutil": "copies, moves and deletes files and trees",
    "tempfile": "creates files",
    "fileinput": "reads and rewrites files in place",
    "sys": "interpreter state (sys.modules, sys.exit, sys.settrace)",
    "builtins.__import__": "imports arbitrary modules",
    "pdb": "debugger that runs source text",
    "bdb": "debugger that runs source text",
    "timeit": "runs source text (timeit.timeit)",
    "trace": "runs code under tracing",
    "profile": "runs source text (profile.run)",
    "cProfile": "runs source text (cProfile.run)",
    "doctest": "runs source text from docstrings",
    "ensurepip": "installs packages",
    "pip": "installs packages",
    "setuptools": "builds and installs packages",
    "distutils": "spawns compilers and installs packages",
    "venv": "creates environments and runs pip",
    "zipimport": "imports code from archives",
    "site": "runs .pth files",
    "gc": "reaches every live object (gc.get_objects)",
    "inspect": "reaches frames and globals of live code",
    "operator.attrgetter": "reads arbitrary attributes (a path to os.system)",
    "operator.methodcaller": "calls arbitrary methods",
    "functools.partial": "wraps a callable with arguments",
    "functools.reduce": "calls a callable repeatedly",
    "torch.load": "a nested torch.load, which may not be restricted",
    "torch.serialization": "torch.load / legacy loaders (nested, unrestricted)",
    "torch.storage._load_from_bytes": "a nested torch.load(weights_only=False) of embedded bytes",
    "torch.jit": "loads and runs TorchScript code",
    "torch._C": "torch's C internals (native functions, jit import)",
    "torch.hub": "downloads and runs repositories",
    "torch.utils.cpp_extension": "compiles and loads native code",
    "torch.package": "imports code from packages",
    "torch.distributed.rpc": "remote procedure calls to other processes",
    "torch.distributed.elastic": "launches and supervises worker processes",
    "torch.distributed.run": "launches worker processes",
    "torch.distributed.launch": "launches worker processes",
    "torch.distributed.distributed_c10d": "network rendezvous and collective calls",
    "torch.distributed.checkpoint.filesystem": "reads and writes checkpoint folders (and unpickles them)",
    "torch.multiprocessing": "starts processes",
    "numpy.load": "numpy.load with allow_pickle",
    "numpy.testing": "numpy.testing._private.utils.runstring runs source text",
    "numpy.f2py": "compiles Fortran and runs processes",
    "numpy.distutils": "spawns compilers",
    "numpy.ctypeslib": "loads native libraries",
    "pandas.read_pickle": "unpickles data from a file",
    "tensorflow": "file and network I/O (tf.io, tf.keras utilities)",
    "keras": "loads models that run code",
    "yaml": "yaml.load with unsafe loaders builds arbitrary objects",
    "jinja2": "renders templates that run code",
    "sqlite3": "opens and writes database files",
    "logging.config": "logging.config.listen runs received configuration",
    "cgi": "web gateway helpers that touch processes and files",
    "aiohttp": "network clients",
    "httpx": "network clients",
    "paramiko": "remote shells",
}

# Exact names in otherwise harmless modules.
DANGEROUS_NAMES: dict[str, str] = {
    "builtins.eval": "evaluates source text",
    "builtins.exec": "runs source text",
    "builtins.compile": "compiles source text into code",
    "builtins.open": "opens files for reading and writing",
    "builtins.getattr": "reads any attribute (getattr chains reach os.system)",
    "builtins.setattr": "changes attributes of live objects",
    "builtins.delattr": "deletes attributes of live objects",
    "builtins.globals": "reaches module globals",
    "builtins.locals": "reaches frames",
    "builtins.vars": "reaches object dictionaries",
    "builtins.input": "reads from the terminal",
    "builtins.breakpoint": "starts a debugger",
    "builtins.exit": "exits the program",
    "builtins.quit": "exits the program",
    "builtins.help": "starts an interactive pager",
    "builtins.type": "creates classes",
    "builtins.super": "reaches parent classes",
    "copyreg.add_extension": "changes the pickle extension registry",
    "collections.namedtuple": "builds classes from source text (namedtuple uses exec)",
    "operator.getitem": "indexes any object (a step in getattr-style chains)",
    "types.FunctionType": "builds a function from a code object",
    "types.CodeType": "builds a code object",
    "types.LambdaType": "builds a function from a code object",
    "types.MethodType": "binds functions to objects",
    "types.ModuleType": "creates modules",
    "io.open": "opens files for reading and writing",
    "io.open_code": "opens files",
    "io.FileIO": "opens files for reading and writing",
    "_io.open": "opens files for reading and writing",
    "_io.FileIO": "opens files for reading and writing",
    "torch._inductor.codecache.compile_file": "compiles and loads native code",
}

# copyreg extension codes (EXT1/2/4 opcodes) are reported as dangerous: they name a global
# indirectly through process-wide state that a file cannot be trusted to match.
EXTENSION_PREFIX = "extension_code_"

# Exact names inside listed modules that are plain records, harmless to build: every
# torch.distributed.checkpoint folder's .metadata names them (the storage record of each entry, and the
# folder's path in its StorageMeta). Only these exact names; anything else in their modules stays listed.
HARMLESS_NAMES: dict[str, str] = {
    "torch.distributed.checkpoint.filesystem._StorageInfo": "DCP's record of where an entry's bytes are",
    "pathlib.Path": "a path value", "pathlib.PosixPath": "a path value", "pathlib.WindowsPath": "a path value",
    "pathlib.PurePath": "a path value", "pathlib.PurePosixPath": "a path value",
    "pathlib.PureWindowsPath": "a path value",
    "pathlib._local.PosixPath": "a path value (Python 3.13)",
    "pathlib._local.WindowsPath": "a path value (Python 3.13)",
}


def danger_reason(module: str, name: str) -> str | None:
    """Why ``module.name`` is dangerous, or ``None`` when it is not on the list."""
    if f"{module}.{name}" in HARMLESS_NAMES:
        return None
    qual = f"{module}.{name}"
    if qual in DANGEROUS_NAMES:
        return DANGEROUS_NAMES[qual]
    if module == "copyreg" and name.startswith(EXTENSION_PREFIX):
        return "a copyreg extension code: names a global through process state, hiding what it is"
    # Walk the dotted path from the most specific prefix: "torch.serialization.load" -> "torch.serialization".
    parts = qual.split(".")
    for i in range(len(parts), 0, -1):
        reason = DANGEROUS_MODULES.get(".".join(parts[:i]))
        if reason:
            return reason
    return None
