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
    "pathlib": "reads, writes and deletes files (Path.write_text, Path.unlink)",
    "zipfile": "creates and overwrites archives on disk",
    "tarfile": "extracts and writes archives on disk",
    "logging.handlers": "handlers that write files and send to sockets, SMTP and HTTP",
    "pydoc": "pydoc.pipepager runs a shell command; pydoc.locate imports anything",
    "uuid": "uuid._get_command_stdout runs commands",
    "imaplib": "IMAP4_stream runs a shell command",
    "_posixsubprocess": "fork_exec starts processes",
    "_winapi": "CreateProcess starts processes",
    "_osx_support": "helpers that run shell commands",
    "_aix_support": "helpers that run shell commands",
    "_pyrepl": "pagers that run shell commands",
    "idlelib": "IDLE's shell runs source text",
    "lib2to3": "grammar loaders unpickle files",
    "test": "test.support helpers spawn Python processes",
    "numpy.lib.npyio": "numpy.load with allow_pickle",
    "numpy.lib._npyio_impl": "numpy.load with allow_pickle",
    "torch._inductor": "compiles and loads native code (codecache.compile_file runs a compiler command)",
    "torch._dynamo": "guards and bytecode tools that evaluate source text",
    "torch.fx.graph_module": "rebuilds a GraphModule by exec()-ing source text carried in the pickle",
    "torch.fx.experimental.symbolic_shapes": "ShapeEnv.evaluate_guards_expression evaluates source text",
    "torch.utils.collect_env": "runs shell commands",
    "torch.utils.bottleneck": "runs scripts under profilers",
    "torch.utils._config_module": "ConfigModule.load_config unpickles nested bytes",
    "torch.utils.data.datapipes.utils.decoder": "decoders that unpickle nested bytes",
    # Issue 20: reached by scanners' published bypasses, or found while checking them.
    "sympy.parsing": "parses source text with eval",
    "sympy.utilities.lambdify": "builds functions from source text with exec",
    "annotationlib": "evaluates string annotations (Python 3.14)",
    "string.Formatter": "format-field paths ('0.exec') read any attribute or item, like getattr",
    "numpy.lib.format": "read_array unpickles nested bytes; open_memmap creates files",
    "numpy.lib._format_impl": "read_array unpickles nested bytes; open_memmap creates files",
    "numpy.lib._datasource": "opens local files and downloads URLs",
    "numpy._core.memmap": "maps a file by its path, creating or overwriting it",
    "numpy.core.memmap": "maps a file by its path, creating or overwriting it",
    "numpy.compat": "numpy 1.x npy_load_module runs a source file",
    "torch.utils.model_zoo": "downloads a checkpoint and torch.loads it",
    "torch.utils.benchmark": "Timer(stmt).timeit() runs source text",
    "torch.testing._internal": "test helpers that run shell commands and processes",
    "torch._export": "deserializes exported programs",
    "torch.export.pt2_archive": "reads and writes program archives",
    "torch.distributed.nn.api.remote_module": "RemoteModule unpickles and runs remote calls (CVE-2024-48063)",
    "pandas.io": "readers that open files and URLs, and read_pickle (a nested unpickle)",
    "pandas.compat.pickle_compat": "a nested unpickle",
    "dbm": "creates and writes database files",
    "_dbm": "creates and writes database files",
    "_gdbm": "creates and writes database files",
    "mailbox": "creates and writes mailbox files",
    "py_compile": "compiles and writes .pyc files (persistence)",
    "compileall": "compiles and writes .pyc files (persistence)",
    "zipapp": "writes executable archives",
    "_imp": "importlib internals: create_dynamic loads native code",
    "_frozen_importlib": "importlib under another name: imports and runs modules",
    "_frozen_importlib_external": "importlib under another name: SourceFileLoader runs files",
    "unittest": "mock and loader helpers that import and look up anything",
    "_interpreters": "runs source text in a subinterpreter (run_string)",
    "_xxsubinterpreters": "runs source text in a subinterpreter (run_string)",
    "pkg_resources": "load_entry_point imports and calls entry points",
    "_cffi_backend": "cffi's native loader",
    "winreg": "writes the Windows registry",
    "_winreg": "writes the Windows registry (Python 2)",
    "poplib": "network sessions",
    "nntplib": "network sessions",
    "socketserver": "network servers",
    "select": "waits on sockets and files",
    "selectors": "waits on sockets and files",
    "mmap": "maps files into memory, writable",
    "syslog": "writes the system log",
    "atexit": "registers callables to run at exit",
    "_signal": "installs signal handlers",
    "_sqlite3": "opens and writes database files",
    "pexpect": "spawns processes",
    "pipes": "runs shell pipelines",
    "glob": "lists files (and glob.os is the os module)",
    "linecache": "reads files by path (used to exfiltrate through DNS)",
    "filecmp": "reads files by path",
    "mlflow.projects": "runs project commands",
    "mlflow.utils.process": "runs commands",
    "IPython.utils.process": "runs shell commands",
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
    "builtins.apply": "Python 2: calls any callable with any arguments",
    "builtins.execfile": "Python 2: runs a source file",
    "operator.itemgetter": "indexes any object (a step in getattr-style chains)",
    "_operator.attrgetter": "reads arbitrary attributes (operator.attrgetter under its C module's name)",
    "_operator.methodcaller": "calls arbitrary methods (operator.methodcaller under its C module's name)",
    "_operator.getitem": "indexes any object (operator.getitem under its C module's name)",
    "_operator.itemgetter": "indexes any object (operator.itemgetter under its C module's name)",
    "_functools.partial": "wraps a callable with arguments (functools.partial under its C module's name)",
    "_functools.reduce": "calls a callable repeatedly (functools.reduce under its C module's name)",
    "codecs.open": "opens files for reading and writing",
    "gzip.open": "opens files for reading and writing",
    "bz2.open": "opens files for reading and writing",
    "lzma.open": "opens files for reading and writing",
    "logging.FileHandler": "creates and appends to files",
    # Issue 20: reached by scanners' published bypasses, or found while checking them.
    "torch._utils._import_dotted_name": "imports any dotted name and walks it with getattr (os.system, ...)",
    "sympy.sympify": "evaluates strings as source text (sympy is installed with torch)",
    "sympy.core.sympify.sympify": "evaluates strings as source text (sympy is installed with torch)",
    "sympy.S": "S('...') evaluates strings as source text",
    "sympy.parse_expr": "parses source text with eval",
    "sympy.lambdify": "builds functions from source text with exec",
    "typing.get_type_hints": "evaluates string annotations as source text (BUILD can set __annotations__)",
    "typing._eval_type": "evaluates string annotations as source text",
    "typing.ForwardRef": "evaluates its string as source text",
    "numpy.save": "writes a file by its path",
    "numpy.savez": "writes a file by its path",
    "numpy.savez_compressed": "writes a file by its path",
    "numpy.savetxt": "writes a file by its path",
    "numpy.memmap": "maps a file by its path, creating or overwriting it",
    "numpy.fromfile": "reads a file by its path",
    "numpy.loadtxt": "reads a file by its path",
    "numpy.genfromtxt": "reads a file or URL by its path",
    "numpy.DataSource": "opens local files and downloads URLs",
    "torch.save": "writes a file by its path (overwrites anything the user can write)",
    "torch.from_file": "maps a file by its path; from_file(path, True, n) creates it",
    "torch.export.load": "loads an exported program from a file",
    "_io.open_code": "opens files",
    "gzip.GzipFile": "opens files by path and mode (creates or truncates)",
    "bz2.BZ2File": "opens files by path and mode (creates or truncates)",
    "lzma.LZMAFile": "opens files by path and mode (creates or truncates)",
    "wave.open": "opens files by path and mode (creates or truncates)",
    "aifc.open": "opens files by path and mode (creates or truncates)",
    "sunau.open": "opens files by path and mode (creates or truncates)",
    "pandas.read_csv": "reads files and URLs (exfiltration by URL)",
    "pandas.read_html": "reads files and URLs (exfiltration by URL)",
    "pandas.read_json": "reads files and URLs (exfiltration by URL)",
    "pandas.read_xml": "reads files and URLs (exfiltration by URL)",
    "pandas.read_excel": "reads files and URLs (exfiltration by URL)",
    "pandas.read_parquet": "reads files and URLs (exfiltration by URL)",
    "pandas.read_feather": "reads files and URLs (exfiltration by URL)",
    "pandas.read_table": "reads files and URLs (exfiltration by URL)",
    "pandas.read_fwf": "reads files and URLs (exfiltration by URL)",
    "pandas.read_sql": "runs SQL on a connection",
    "pandas.read_sql_query": "runs SQL on a connection",
    "pandas.read_sql_table": "runs SQL on a connection",
    "pandas.read_hdf": "reads files by path",
    "pandas.read_stata": "reads files and URLs",
    "pandas.read_sas": "reads files and URLs",
    "pandas.read_spss": "reads files by path",
    "pandas.read_orc": "reads files by path",
    "pandas.read_clipboard": "reads the clipboard (runs a clipboard command)",
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
    # torch.testing._internal is listed (its helpers run shell commands); torch.export's own tests save this
    # tensor subclass in .pt2 files, and rebuilding it runs nothing else.
    "torch.testing._internal.two_tensor.TwoTensor": "a tensor subclass of two tensors, from torch's tests",
}


# From protocol 4, pickle resolves a dotted *name* with getattr, one part after another, so a global in
# a harmless module reaches whatever that module imported (glob.os.system, torch._utils.os.system,
# collections._sys.modules) or the interpreter's internals (OrderedDict.__init__.__globals__). Such a
# chain is dangerous when a part of it is a dunder, or when it continues into a listed module or name,
# also under a private alias (``import sys as _sys``).
CHAIN_DUNDER_REASON = "an attribute chain through {part}, which reaches the interpreter's internals"
CHAIN_REASON = "an attribute chain to {target}: {reason}"
# A name that is a dunder by itself reaches the same internals: builtins.__getattribute__ is getattr,
# numpy.__builtins__ is the builtins module, X.__loader__ loads code (scanners' published bypasses).
DUNDER_REASON = "{part} reaches the interpreter's internals (a getattr, a module's builtins, its loader)"
# Modules that a harmless module imported are its attributes: glob.os, reprlib.builtins, torch._utils.sys.
# Only these names count (the whole list would make e.g. torch.profiler.profile "profile").
ALIAS_MODULES = frozenset({"os", "sys", "posix", "nt", "builtins", "subprocess", "importlib", "socket", "shutil",
                           "ctypes", "pickle", "marshal", "runpy", "pty"})
ALIAS_REASON = "the module {target} reached as an attribute of {module}: {reason}"
FROM_FILE_REASON = "maps a file by its path; from_file(path, True, n) creates it"


def _listed(qual: str) -> str | None:
    if qual in DANGEROUS_NAMES:
        return DANGEROUS_NAMES[qual]
    # Walk the dotted path from the most specific prefix: "torch.serialization.load" -> "torch.serialization".
    parts = qual.split(".")
    for i in range(len(parts), 0, -1):
        reason = DANGEROUS_MODULES.get(".".join(parts[:i]))
        if reason:
            return reason
    return None


def danger_reason(module: str, name: str) -> str | None:
    """Why ``module.name`` is dangerous, or ``None`` when it is not on the list."""
    if f"{module}.{name}" in HARMLESS_NAMES:
        return None
    if module == "copyreg" and name.startswith(EXTENSION_PREFIX):
        return "a copyreg extension code: names a global through process state, hiding what it is"
    parts = name.split(".")
    if len(parts) > 1:
        chain = _chain(parts)
        if chain:
            return chain
    reason = _listed(f"{module}.{name}")
    if reason:
        return reason
    if module.split(".", 1)[0] == "torch" and parts[-1] == "from_file":     # torch.UntypedStorage.from_file
        return FROM_FILE_REASON
    if len(parts) == 1:
        if _dunder(name):
            return DUNDER_REASON.format(part=name)
        alias = name.lstrip("_")
        if alias in ALIAS_MODULES:
            return ALIAS_REASON.format(target=alias, module=module,
                                       reason=_listed(alias) or "every builtin (exec, eval, open, __import__)")
    return None


def _chain(parts: list[str]) -> str | None:
    """Why a dotted name (an attribute chain from protocol 4 on) is dangerous: a dunder along the way, or a
    listed module or name it continues into (also under a private alias)."""
    for part in parts:
        if _dunder(part):
            return CHAIN_DUNDER_REASON.format(part=part)
    for i in range(len(parts)):
        for head in dict.fromkeys((parts[i], parts[i].lstrip("_"))):
            target = ".".join([head, *parts[i + 1:]])
            reason = _listed(target)
            if reason:
                return CHAIN_REASON.format(target=target, reason=reason)
    return None


def _dunder(part: str) -> bool:
    return len(part) > 4 and part.startswith("__") and part.endswith("__")
