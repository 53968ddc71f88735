"""Will ``torch.load(FILE)`` work here, and if not, how to make it work: the load doctor.

:func:`diagnose` answers for ``torch.load(FILE)`` with torch's default arguments on this machine (or, with
``release``, under another torch release's rules): whether it loads, every reason it does not (globals
the weights-only unpickler refuses, opcodes it cannot read, storages saved on devices this machine lacks,
a file that is not a checkpoint or is cut short), and the fix: a ``snippet`` that loads the file with
the weights-only unpickler kept on (``safe_globals``/``add_safe_globals`` with the imports it needs and
``map_location`` where needed), or, where no allowlist can make torch take the file, the ``convert``
command that writes a copy torch opens with its defaults. Each blocked class is described (plain data,
a pickled module, a class whose code would run).

Nothing here imports or calls what a file names: the verdict comes from the reader's record of the
pickles and its inert object tree (see ``weights_only``). torch itself is imported only to read the
installed release's own allowlist and its devices, and only when the caller asks (the CLI does; the
window, which never imports torch to open a file, uses the table and says so).
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field

from ..model.checkpoint import Checkpoint
from ..read.pickle.danger import danger_reason
from ..util.errors import CheckpointError, NotACheckpointError, TruncatedFileError
from ..util.locations import is_url, location_name, shown_location
from ..util.textsafe import safe_text
from .weights_only import FileFacts, WeightsOnlyCheck, check, file_facts, is_python_name
from .weights_only_table import NEWEST, Release, nearest, release

TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".bin", ".ckpt")
_LOADABLE_FORMATS = ("torch-zip", "torch-legacy", "torch-tar", "torchscript", "safetensors")
_ALWAYS_THERE = ("cpu", "meta")


# -- this machine ------------------------------------------------------------------------------------------
@dataclass
class Machine:
    """What torch.load would find here: the installed torch and the devices storages can go to."""

    torch_version: str | None            # installed torch (None: not installed)
    devices: dict[str, int]              # device type -> how many ("cpu": 1, "cuda": 2)
    how: str                             # how that was found out, for the report
    numpy_major: int = 2

    def has(self, location: str) -> bool:
        kind, _, index = location.partition(":")
        if kind in _ALWAYS_THERE:
            return True
        count = self.devices.get(kind, 0)
        if not count:
            return False
        try:
            return int(index or 0) < count
        except ValueError:
            return False


def _installed_torch_version() -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version("torch")
        except PackageNotFoundError:
            return None
    except Exception:  # noqa: BLE001 - broken metadata must not stop a report
        return None


def _numpy_major() -> int:
    try:
        from importlib.metadata import version
        return int(version("numpy").split(".")[0])
    except Exception:  # noqa: BLE001
        return 2


def probe_machine(*, import_torch: bool) -> Machine:
    """The devices here. With ``import_torch`` (and torch installed) torch is asked; otherwise the answer
    is inferred without importing it (a ``+cpu`` build has no CUDA; an NVIDIA driver in /proc suggests one)."""
    installed = _installed_torch_version()
    devices = {"cpu": 1}
    if installed is None:
        return Machine(None, devices, "torch is not installed here: assuming a machine without a GPU", _numpy_major())
    if import_torch:
        try:
            import torch
            installed = torch.__version__
            if torch.cuda.is_available():
                devices["cuda"] = torch.cuda.device_count()
            if getattr(torch, "xpu", None) is not None and torch.xpu.is_available():
                devices["xpu"] = torch.xpu.device_count()
            if torch.backends.mps.is_available():
                devices["mps"] = 1
            found = ", ".join(f"{k}:{v}" if k != "cpu" else k for k, v in devices.items())
            cuda = "torch.cuda.is_available() is " + str("cuda" in devices)
            return Machine(installed, devices, f"asked torch {installed}: {cuda}; devices {found}", _numpy_major())
        except Exception as e:  # noqa: BLE001 - a broken torch install: say so, answer without it
            return Machine(installed, devices, f"importing torch failed ({type(e).__name__}); assuming no GPU",
                           _numpy_major())
    if "+cpu" in installed:
        how = f"torch {installed} is a CPU-only build: no GPU"
    elif sys.platform.startswith("linux") and os.path.exists("/proc/driver/nvidia/version"):
        devices["cuda"] = 1
        how = f"torch {installed} not imported; an NVIDIA driver is present, so CUDA is assumed"
    elif sys.platform == "darwin" and os.uname().machine == "arm64":
        devices["mps"] = 1
        how = f"torch {installed} not imported; Apple silicon, so MPS is assumed"
    else:
        how = f"torch {installed} not imported; no GPU driver found, so no GPU is assumed"
    return Machine(installed, devices, how, _numpy_major())


# -- which allowlist -------------------------------------------------------------------------------------
@dataclass
class Target:
    """The torch release the verdict is for, and the default allowlist it is judged with."""

    release: Release
    allowed: frozenset[str]
    source: str                 # in words: "torch 2.13.0+cpu installed here (its own allowlist)"
    installed: bool             # the installed torch's own allowlist (not the table)


def target_for(version: str | None = None, *, machine: Machine | None = None, import_torch: bool = False) -> Target:
    """The target: ``version`` from the table; else the installed torch's own allowlist when ``import_torch``
    and torch is importable; else the table's entry for the installed release (the newest for none)."""
    if version is not None:
        rel = release(version)
        return Target(rel, rel.default_allowed | rel.registered_by_import_torch,
                      f"torch {rel.version} (ckptviewer's table of that release's allowlist)", False)
    installed = machine.torch_version if machine is not None else _installed_torch_version()
    if import_torch and installed is not None:
        try:
            import torch
            from torch import _weights_only_unpickler as wo
            allowed = frozenset(wo._get_allowed_globals()) | frozenset(wo._get_user_allowed_globals())
            rel = nearest(torch.__version__)
            return Target(rel, allowed, f"torch {torch.__version__} installed here (its own allowlist)", True)
        except Exception:  # noqa: BLE001 - fall back to the table, and say so
            pass
    rel = nearest(installed)
    if installed is None:
        where = f"torch is not installed here; answering for torch {NEWEST} from ckptviewer's table"
    else:
        where = f"torch {installed} installed here (ckptviewer's table for {rel.version}; torch not imported)"
    return Target(rel, rel.default_allowed | rel.registered_by_import_torch, where, False)


# -- the report ------------------------------------------------------------------------------------------
@dataclass
class Reason:
    """Why the file does not load (``blocks``), or a fact worth knowing about loading it (not ``blocks``)."""

    kind: str
    message: str
    action: str = ""
    names: list[str] = field(default_factory=list)
    blocks: bool = True
    fixable: bool = False                 # the snippet fixes it
    torch_error: str = ""                 # the start of what torch raises, to match against a traceback

    def to_json(self) -> dict:
        return {"kind": self.kind, "blocks": self.blocks, "fixable": self.fixable, "message": self.message,
                "action": self.action, "names": list(self.names), "torch_error": self.torch_error or None}


@dataclass
class ClassNote:
    name: str
    kind: str          # plain data | numpy | pickled module | torch | main | dangerous | unknown package | ...
    text: str

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "description": self.text}


@dataclass
class Diagnosis:
    path: str
    target: Target
    machine: Machine
    format: str | None = None
    loads: bool | None = None             # None: the file could not be read, no verdict
    unpickler_accepts: bool | None = None
    blocking: list[str] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    classes: list[ClassNote] = field(default_factory=list)
    snippet: str | None = None
    convert: str | None = None
    saved_devices: list[str] = field(default_factory=list)
    missing_devices: list[str] = field(default_factory=list)
    weights_only_false: str = ""          # what torch.load(weights_only=False) would do
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def status(self) -> int:
        """0: loads with the defaults; 1: does not; 2: could not be read (no verdict)."""
        if self.loads is None:
            return 2
        return 0 if self.loads else 1

    def verdict(self) -> str:
        rel = self.target.release
        call = "torch.load(FILE)" if rel.weights_only_default else "torch.load(FILE, weights_only=True)"
        if self.loads is None:
            return f"no verdict: {self.error}"
        if self.loads:
            return f"{call} loads it with torch {rel.version}'s defaults"
        fix = ("the snippet below fixes it" if self.snippet else
               "convert it (below)" if self.convert else "no code can load it as it is")
        return f"{call} fails under torch {rel.version}: {self.reasons_summary()}; {fix}"

    def reasons_summary(self) -> str:
        blocking = [r for r in self.reasons if r.blocks]
        return "; ".join(_short_reason(r) for r in blocking[:3]) + (" ..." if len(blocking) > 3 else "")

    def to_json(self) -> dict:
        rel = self.target.release
        return {
            "file": self.path,
            "format": self.format,
            "status": self.status,
            "error": self.error,
            "verdict": self.verdict(),
            "torch": {"version": rel.version, "allowlist": "installed" if self.target.installed else "table",
                      "source": self.target.source, "weights_only_default": rel.weights_only_default},
            "weights_only": {"loads": self.loads, "blocking": list(self.blocking),
                             "unpickler_accepts": self.unpickler_accepts},
            "devices": {"saved": list(self.saved_devices), "missing": list(self.missing_devices),
                        "available": [k if k == "cpu" else f"{k}:{n}" for k, n in self.machine.devices.items()],
                        "how": self.machine.how},
            "reasons": [r.to_json() for r in self.reasons],
            "classes": [c.to_json() for c in self.classes],
            "fix": {"snippet": self.snippet, "convert": self.convert},
            "weights_only_false": self.weights_only_false or None,
            "notes": list(self.notes),
        }

    def text_lines(self) -> list[str]:
        """The report for people (file-provided names made display-safe)."""
        rel = self.target.release
        lines = [f"{safe_text(self.path, 300)}: {self.format or 'unreadable'}"]
        if self.loads is None:
            lines.append(f"  could not be read: {safe_text(self.error, 400)}")
            return lines
        call = "torch.load(FILE)" if rel.weights_only_default else "torch.load(FILE, weights_only=True)"
        word = "LOADS" if self.loads else "does NOT load"
        lines.append(f"  {call} with {self.target.source}: {word}")
        if not rel.weights_only_default:
            lines.append(f"  (torch {rel.version} defaults to weights_only=False, which runs the pickle; this "
                         f"answers for weights_only=True)")
        for r in self.reasons:
            tag = "BLOCKS" if r.blocks else "note"
            lines.append(f"  {tag}: {safe_text(r.message, 600)}")
            if r.action:
                lines.append(f"         {safe_text(r.action, 600)}")
        if self.classes:
            lines.append("  what the file names:")
            width = min(max(len(safe_text(c.name, 70)) for c in self.classes), 70)
            for c in self.classes:
                lines.append(f"    {safe_text(c.name, 70):<{width}}  {safe_text(c.text, 300)}")
        if self.snippet:
            lines.append("  fix: load it with the weights-only unpickler kept on:")
            lines += [f"    {line}" if line else "" for line in self.snippet.splitlines()]
        if self.convert:
            lead = "  or write a copy that loads with the defaults:" if self.snippet else \
                "  fix: write a copy that loads with the defaults:"
            lines += [lead, f"    {self.convert}"]
        if self.weights_only_false and not self.loads:
            lines.append(f"  weights_only=False: {safe_text(self.weights_only_false, 600)}")
        lines += [f"  note: {safe_text(n, 600)}" for n in self.notes]
        return lines


def _short_reason(r: Reason) -> str:
    if r.kind in ("globals", "dangerous", "main") and r.names:
        shown = ", ".join(r.names[:3]) + (f" and {len(r.names) - 3} more" if len(r.names) > 3 else "")
        return {"globals": "blocked globals ", "dangerous": "dangerous globals ", "main": "classes from __main__ "
                }[r.kind] + shown
    if r.kind == "device":
        return "storages on " + ", ".join(r.names)
    return r.message.split(";")[0][:120]


# -- diagnosing -------------------------------------------------------------------------------------------
def diagnose(path: str, *, target: Target | None = None, machine: Machine | None = None,
             import_torch: bool = True) -> Diagnosis:
    """The verdict for ``torch.load(path)`` with the defaults (opens the file with the reader; never raises
    for what the file holds)."""
    from ..read.open import open_checkpoint
    machine = machine or probe_machine(import_torch=import_torch)
    target = target or target_for(machine=machine, import_torch=import_torch)
    d = Diagnosis(shown_location(path), target, machine)
    _environment_notes(d)
    try:
        ckpt = open_checkpoint(path)
    except NotACheckpointError as e:
        return _not_a_checkpoint(d, path, e)
    except TruncatedFileError as e:
        d.loads = False
        d.unpickler_accepts = None
        d.reasons.append(Reason("truncated", e.message, e.hint or "Download or copy it again.",
                                torch_error=_truncated_error(path)))
        return d
    except CheckpointError as e:
        d.error = e.message + (f" {e.hint}" if e.hint else "")
        return d
    except OSError as e:
        d.error = f"cannot read the file ({e.strerror or e})"
        return d
    with ckpt:
        return diagnose_checkpoint(ckpt, target=target, machine=machine, diagnosis=d)


def _environment_notes(d: Diagnosis) -> None:
    for var in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        if os.environ.get(var, "").lower() in ("1", "y", "yes", "true"):
            what = ("weights_only=True even when a caller passes weights_only=False" if "NO_" not in var else
                    "weights_only=False when a caller does not pass weights_only (the pickle then runs)")
            d.notes.append(f"{var} is set here: torch.load uses {what}")


def _not_a_checkpoint(d: Diagnosis, path: str, e: NotACheckpointError) -> Diagnosis:
    if is_url(path) or os.path.isdir(path):
        d.error = e.message
        return d
    d.loads = False
    first = _first_byte(path)
    if d.target.release.weights_only_default:
        said = "EOFError" if first is None else f"UnpicklingError ... Unsupported operand {first}"
    else:
        said = "EOFError" if first is None else f"UnpicklingError: invalid load key, {chr(first)!r}"
    d.reasons.append(Reason("not_a_checkpoint", e.message, e.hint or "", torch_error=said))
    return d


def _first_byte(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            b = f.read(1)
        return b[0] if b else None
    except OSError:
        return None


def _truncated_error(path: str) -> str:
    try:
        with open(path, "rb") as f:
            zip_like = f.read(2) == b"PK"
    except OSError:
        zip_like = False
    return ("RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory"
            if zip_like else "")


def diagnose_checkpoint(ckpt: Checkpoint, *, target: Target, machine: Machine,
                        diagnosis: Diagnosis | None = None) -> Diagnosis:
    """The verdict for a checkpoint the reader has opened (the window's loading worker calls this)."""
    d = diagnosis or Diagnosis(ckpt.path, target, machine)
    if diagnosis is None:
        _environment_notes(d)
    d.format = ckpt.format
    rel = target.release
    fmt = ckpt.format
    if fmt not in _LOADABLE_FORMATS:
        return _not_one_file(d, ckpt)
    if fmt == "safetensors":
        return _safetensors(d, ckpt)
    facts = file_facts(ckpt)
    if not facts.walk_complete:
        d.notes.append("the object graph is too large to check completely; the verdict covers what was walked")
    wo: WeightsOnlyCheck | None = None
    if fmt == "torchscript" and rel.refuses_torchscript:
        d.reasons.append(Reason("torchscript", "a TorchScript archive (torch.jit.save): torch.load refuses it under "
                                "weights_only", "Load it with torch.jit.load(FILE), which runs the archive's "
                                "TorchScript code, or convert it to a plain state_dict (below).",
                                torch_error="RuntimeError: Cannot use ``weights_only=True`` with TorchScript "
                                            "archives passed to ``torch.load``."))
    elif fmt == "torch-tar" and rel.refuses_tar:
        d.reasons.append(Reason("tar_format", "the tar format of torch < 0.1.10: torch.load refuses it under "
                                "weights_only", "Convert it (below).",
                                torch_error="RuntimeError: Cannot use ``weights_only=True`` with files saved in "
                                            "the legacy .tar format."))
    elif fmt != "torchscript":
        wo = check(facts, rel, target.allowed)
        _weights_only_reasons(d, wo)
    cut_short = ckpt.meta.get("cut_short") if isinstance(ckpt.meta, dict) and fmt != "torch-legacy" else None
    missing = ckpt.missing_bytes()
    if cut_short:
        # The reader recovers a zip cut short from its local headers; torch.load needs the directory.
        d.reasons.append(Reason("truncated", "the zip archive was cut short: it has no end record (directory), so "
                                "torch.load cannot open it" + (f"; the file ends inside {cut_short}"
                                                              if cut_short != "the zip directory" else ""),
                                "Download or copy it again.", torch_error=_truncated_error(d.path)))
    elif missing is not None and missing.truncated:
        d.reasons.append(Reason("truncated", f"the file was cut short: {missing.headline().partition(': ')[2]}",
                                "Download or copy it again."))
    elif facts.damaged:
        d.reasons.append(Reason("damaged", f"the file is damaged: {'; '.join(facts.damaged[:3])}"
                                + (f" and {len(facts.damaged) - 3} more" if len(facts.damaged) > 3 else ""),
                                "Download or copy it again."))
    _devices(d, facts)
    if fmt == "torch-legacy":
        d.reasons.append(Reason("legacy_mmap", "the legacy (non-zip) format: torch.load(FILE, mmap=True) fails for "
                                "it (the defaults do not use mmap)", "To memory-map it, convert it to the zip "
                                "format: " + _convert_command(d.path, safe=False), blocks=False,
                                torch_error="RuntimeError: mmap can only be used with files saved with "
                                            "`torch.save(..., _use_new_zipfile_serialization=True)"))
    d.reasons.sort(key=lambda r: not r.blocks)
    d.blocking = wo.blocking if wo is not None else []
    d.unpickler_accepts = wo.accepts if wo is not None else (fmt == "torchscript" and not rel.refuses_torchscript)
    blocking = [r for r in d.reasons if r.blocks]
    d.loads = not blocking
    d.classes = _class_notes(wo, facts) if wo is not None else []
    d.weights_only_false = _weights_only_false(facts, wo)
    if not d.loads:
        if all(r.fixable for r in blocking):
            d.snippet = build_snippet(d.path, wo, rel, machine, map_location=bool(d.missing_devices))
        if any(r.kind not in ("not_a_checkpoint", "truncated", "damaged") for r in blocking) and not facts.damaged:
            weights_only_trouble = any(r.kind not in ("device",) for r in blocking)
            d.convert = _convert_command(d.path, safe=weights_only_trouble, to_cpu=bool(d.missing_devices))
    return d


def _weights_only_reasons(d: Diagnosis, wo: WeightsOnlyCheck) -> None:
    for p in wo.problems:
        if p.kind == "globals":
            d.reasons.append(Reason("globals", f"the weights-only unpickler refuses {len(p.names)} global"
                                    f"{'s' if len(p.names) != 1 else ''} it does not allow by default: "
                                    f"{', '.join(p.names)}",
                                    "Allowlist them for this load (the snippet) if you trust the file, or convert it.",
                                    p.names, fixable=True,
                                    torch_error=f"UnpicklingError: Weights only load failed ... GLOBAL {p.names[0]} "
                                                f"was not an allowed global by default"))
        elif p.kind == "imports":
            d.reasons.append(Reason("imports", p.message, "Import them before loading (the snippet does).", p.names,
                                    fixable=True, torch_error="UnpicklingError: Weights only load failed. "
                                                              "``torch.nested`` and ``torch._dynamo`` must be imported"))
        elif p.kind == "dangerous":
            d.reasons.append(Reason("dangerous", p.message, "Do not load this file with torch.load(weights_only="
                                    "False) or allowlist these names. `ckptviewer scan` lists what it would run; "
                                    "a converted copy keeps the tensors and drops the calls.", p.names))
        elif p.kind == "main":
            d.reasons.append(Reason("main", p.message, "Convert it (below), or load it in a script that defines "
                                    "the class, with the class in safe_globals.", p.names))
        elif p.kind == "protocol":
            d.reasons.append(Reason("protocol", p.message, "Convert it (below): the copy is written with protocol 2.",
                                    p.names, torch_error=f"UnpicklingError ... Unsupported operand "
                                                         f"{p.names[0].split('(')[-1].rstrip(')')}"))
        else:
            d.reasons.append(Reason(p.kind, p.message, "No allowlist can change this; convert it (below).", p.names))


def _devices(d: Diagnosis, facts: FileFacts) -> None:
    d.saved_devices = sorted(facts.locations)
    missing = sorted(loc for loc in facts.locations if not d.machine.has(loc))
    d.missing_devices = missing
    if not missing:
        return
    kinds = {m.partition(":")[0] for m in missing}
    if "cuda" in kinds and "cuda" not in d.machine.devices:
        said = ("RuntimeError: Attempting to deserialize object on a CUDA device but torch.cuda.is_available() "
                "is False")
    elif "cuda" in kinds:
        said = "RuntimeError: Attempting to deserialize object on CUDA device"
    else:
        said = ""
    d.reasons.append(Reason("device", f"storages saved on {', '.join(missing)}, which this machine lacks "
                            f"({d.machine.how})", "Pass map_location=\"cpu\" (the snippet does).", missing,
                            fixable=True, torch_error=said))


def _not_one_file(d: Diagnosis, ckpt: Checkpoint) -> Diagnosis:
    d.loads = False
    if ckpt.format in ("torch-export", "aotinductor"):
        # A .pt2 archive: torch.load refuses it (no data.pkl); torch.export.load reads a program (and
        # unpickles parts of it with weights_only=False), aoti_load_package loads compiled native code.
        loader = ("torch.export.load(FILE), which unpickles some of its parts with weights_only=False"
                  if ckpt.format == "torch-export" else
                  "torch._inductor.aoti_load_package(FILE), which loads and runs its compiled library")
        d.reasons.append(Reason("not_one_file", f"a .pt2 archive ({ckpt.format}): torch.load does not read it; "
                                f"it loads with {loader}",
                                "To get its weights as a plain checkpoint, convert it (below)."))
        d.convert = _convert_command(d.path, safe=False)
        return d
    what = ("a torch.distributed.checkpoint folder" if ckpt.format == "torch-dcp" else
            f"a {ckpt.format} checkpoint (an index and its shard files)")
    d.reasons.append(Reason("not_one_file", f"{what}: torch.load reads one file",
                            "Convert it to one file (below); a sharded set can also be loaded shard by shard."))
    d.convert = _convert_command(d.path, safe=False, folder=True)
    return d


def _safetensors(d: Diagnosis, ckpt: Checkpoint) -> Diagnosis:
    rel = d.target.release
    by_suffix = d.path.endswith(".safetensors")
    facts = FileFacts()
    for st in ckpt.storages.values():
        facts.locations[str(st.location)] += 1
    if rel.loads_safetensors and by_suffix:
        d.loads = True
        d.unpickler_accepts = True
        d.notes.append(f"torch {rel.version} passes a .safetensors path to safetensors.torch.load_file (the "
                       f"safetensors package must be installed); no pickle is involved")
        return d
    d.loads = False
    why = (f"torch {rel.version} reads safetensors files only from 2.13" if not rel.loads_safetensors else
           "torch.load recognises safetensors files by the .safetensors suffix, which this name lacks")
    d.reasons.append(Reason("safetensors", f"a safetensors file; {why}", "Load it with safetensors (the snippet).",
                            fixable=True, torch_error="UnpicklingError ... Unsupported operand"))
    d.snippet = ("from safetensors.torch import load_file\n\n"
                 f"state_dict = load_file({d.path!r})")
    return d


# -- the fix -------------------------------------------------------------------------------------------------
def _convert_command(path: str, *, safe: bool, to_cpu: bool = False, folder: bool = False) -> str:
    """``ckptviewer convert`` writing a copy beside the source: ``--weights-only-safe`` when ``safe``,
    ``--map-location '*=cpu'`` when ``to_cpu``; otherwise a plain copy in the zip format."""
    # A remote source's copy goes to the current folder, under the file's own name (never a URL).
    local = location_name(path) if is_url(path) else path
    if folder or (not is_url(path) and os.path.isdir(path)):
        stem = local.rstrip("/\\")
        if stem.endswith(".index.json"):
            stem = stem[: -len(".index.json")]
        out = stem + ".pt"
    else:
        stem, ext = os.path.splitext(local)
        tag = "weights-only" if safe else "cpu" if to_cpu else "zip"
        out = f"{stem}.{tag}{ext if ext in TORCH_SUFFIXES else '.pt'}"
    parts = ["ckptviewer", "convert"] + (["--weights-only-safe"] if safe else []) + [shown_location(path), "-o", out]
    if to_cpu:
        parts += ["--map-location", "*=cpu"]
    return " ".join(shlex.quote(p) for p in parts)


def _expression(name: str, release: Release, numpy_major: int) -> tuple[str, str | None]:
    """(Python expression for an allowlist entry, module to import or None) for the global ``name``."""
    module, _, short = name.rpartition(".")
    if module == "builtins":
        return short, None
    # numpy 2 moved numpy.core to numpy._core; a file written under the other major version names the
    # old path, and the object's own key is the new one, so only the (object, "name") form matches.
    for old, new, wanted in (("numpy.core.", "numpy._core.", 2), ("numpy._core.", "numpy.core.", 1)):
        if name.startswith(old) and (numpy_major >= 2) == (wanted == 2):
            real = new + name[len(old):]
            real_module = real.rpartition(".")[0]
            return f"({real}, {name!r})", real_module
    return name, module


def needs_tuple_form(name: str, numpy_major: int) -> bool:
    return (name.startswith("numpy.core.") and numpy_major >= 2) or (name.startswith("numpy._core.")
                                                                     and numpy_major < 2)


def build_snippet(path: str, wo: WeightsOnlyCheck | None, release: Release, machine: Machine, *,
                  map_location: bool) -> str | None:
    """Code that loads ``path`` with the weights-only unpickler on: the allowlist, imports, map_location.
    None when no allowlist this release accepts can do it."""
    names = list(wo.allowlist) if wo is not None else []
    if any(not is_python_name(n) for n in names):
        return None                      # never put file-provided text into code that is not a plain name
    if not release.has_tuple_entries and any(needs_tuple_form(n, machine.numpy_major) for n in names):
        return None
    entries, modules = [], set()
    for n in names:
        expr, module = _expression(n, release, machine.numpy_major)
        entries.append(expr)
        if module:
            modules.add(module)
    modules.update(wo.imports if wo is not None else ())
    modules.add("torch")
    lines = [f"import {m}" for m in sorted(modules)] + [""]
    kwargs = (", map_location=\"cpu\"" if map_location else "") + ", weights_only=True"
    load = f"torch.load({path!r}{kwargs})"
    if entries:
        if any(n.split(".")[0] not in _TRUSTED_TOPS for n in names):
            lines.append("# Only for a file you trust: loading runs these classes' own code.")
        listed = _list_literal(entries)
        if release.has_safe_globals_context:
            lines.append(f"with torch.serialization.safe_globals({listed}):")
            lines.append(f"    checkpoint = {load}")
        else:
            lines.append(f"torch.serialization.add_safe_globals({listed})")
            lines.append(f"checkpoint = {load}")
    else:
        lines.append(f"checkpoint = {load}")
    return "\n".join(lines)


# Packages whose allowlisted classes are plain data or torch's own (no comment about running code).
_TRUSTED_TOPS = frozenset(("numpy", "builtins", "collections", "argparse", "torch", "_codecs", "pathlib", "copyreg",
                           "types", "typing", "datetime", "decimal", "fractions"))


def _list_literal(entries: list[str]) -> str:
    one_line = "[" + ", ".join(entries) + "]"
    if len(one_line) <= 80:
        return one_line
    return "[\n" + "".join(f"    {e},\n" for e in entries) + "]"


# -- what each blocked global is ------------------------------------------------------------------------------
_PLAIN_STDLIB = {
    "argparse.Namespace": "plain data: argparse's bag of command-line options",
    "types.SimpleNamespace": "plain data: a bag of attributes",
    "builtins.set": "plain data: a set", "builtins.frozenset": "plain data: a frozenset",
    "builtins.slice": "plain data: a slice", "builtins.range": "plain data: a range",
    "builtins.complex": "plain data: a complex number", "builtins.bytearray": "plain data: a bytearray",
    "builtins.list": "plain data: list (here as a constructor or default factory)",
    "builtins.dict": "plain data: dict (here as a constructor)", "builtins.int": "plain data: int",
    "builtins.float": "plain data: float", "builtins.str": "plain data: str", "builtins.tuple": "plain data: tuple",
    "builtins.bool": "plain data: bool", "builtins.object": "Python's base class (protocol 0/1 objects)",
    "collections.defaultdict": "plain data: a dict with a default factory",
    "collections.deque": "plain data: a deque", "collections.OrderedDict": "plain data: an ordered dict",
    "copyreg._reconstructor": "how protocol 0/1 pickles rebuild plain objects",
    "_codecs.encode": "how protocol 2 pickles bytes (torch 2.5+ allows it by default)",
    "typing.Any": "a typing marker (omegaconf configs name it)",
    "datetime.datetime": "plain data: a date and time", "datetime.date": "plain data: a date",
    "datetime.timedelta": "plain data: a time span", "decimal.Decimal": "plain data: a decimal number",
    "fractions.Fraction": "plain data: a fraction", "enum.Enum": "an enumeration",
}


def _class_notes(wo: WeightsOnlyCheck, facts: FileFacts) -> list[ClassNote]:
    out = []
    for name in wo.blocking:
        module, _, short = name.rpartition(".")
        top = module.split(".")[0]
        reason = danger_reason(module, short)
        if reason is not None:
            out.append(ClassNote(name, "dangerous", f"dangerous: {reason}; never allowlist it"))
        elif module == "__main__":
            out.append(ClassNote(name, "main", "defined in the script that saved the file; only that script "
                                 "(or one defining the same class) can allowlist it"))
        elif name in facts.module_classes:
            where = "" if top == "torch" else f" from package {top}, whose code runs while loading"
            out.append(ClassNote(name, "pickled module", f"a pickled module{where}; prefer its state_dict "
                                 f"(model.state_dict() when saving, load_state_dict when loading)"))
        elif name in _PLAIN_STDLIB:
            out.append(ClassNote(name, "plain data", _PLAIN_STDLIB[name]))
        elif name.startswith("numpy.dtypes."):
            out.append(ClassNote(name, "numpy", "numpy's class for one dtype: building a numpy dtype needs it "
                                 "(torch's get_unsafe_globals_in_checkpoint does not list it)"))
        elif top == "numpy":
            out.append(ClassNote(name, "numpy", "numpy arrays, scalars and dtypes rebuilt from plain numbers"))
        elif top == "pathlib":
            out.append(ClassNote(name, "plain data", "a file system path"))
        elif top == "torch":
            out.append(ClassNote(name, "torch", "part of torch, not allowed by default"))
        elif top == "omegaconf":
            out.append(ClassNote(name, "config", "an omegaconf config object (needs omegaconf installed)"))
        elif top in ("builtins", "collections", "datetime", "enum", "decimal", "fractions", "typing", "types"):
            what = "called with arguments while loading" if name in facts.called else "built while loading"
            out.append(ClassNote(name, "standard library", f"from Python's standard library, {what}"))
        else:
            what = ("loading calls it with arguments from the file" if name in facts.called
                    else "loading runs its code (__new__, __setstate__)")
            out.append(ClassNote(name, "unknown package", f"from package {top}, not torch or Python: allowlisting "
                                 f"it imports {top}, and {what}; only if you trust the file and have {top} "
                                 f"installed"))
    return out


def _weights_only_false(facts: FileFacts, wo: WeightsOnlyCheck | None) -> str:
    if wo is None:
        return ""
    dangerous = [n for n in wo.blocking if danger_reason(*_split(n)) is not None]
    if dangerous:
        return (f"never: it would call {', '.join(dangerous[:6])}" + (" and more" if len(dangerous) > 6 else "")
                + " (code execution, files or processes)")
    modules = sorted({n.rpartition('.')[0] for n in wo.blocking} - {"builtins"})
    if not modules:
        return ""
    others = [m for m in modules if m.split(".")[0] not in ("torch", "numpy", "collections", "argparse", "_codecs",
                                                             "pathlib", "copyreg", "typing", "types", "datetime")]
    what = f"would import {', '.join(modules[:8])}" + (" and more" if len(modules) > 8 else "")
    if others:
        return (f"{what} and run their code while loading (constructors, __setstate__); nothing here is on "
                f"ckptviewer's list of dangerous globals, but only do it for a file you trust")
    return (f"{what} (standard library, numpy and torch classes only); it still runs whatever the file names, "
            f"so prefer the snippet, which keeps the weights-only unpickler on")


def _split(name: str) -> tuple[str, str]:
    module, _, short = name.rpartition(".")
    return module, short

