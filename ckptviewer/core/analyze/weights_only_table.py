"""What each torch release's weights-only unpickler allows by default, and how it behaves: data, no logic.

``torch.load`` with ``weights_only=True`` (the default since torch 2.6) unpickles through
``torch/_weights_only_unpickler.py``: a ``GLOBAL`` is accepted only when its ``"module.name"`` is a key
of ``_get_allowed_globals()`` (the defaults below) or of the user's allowlist (``add_safe_globals`` /
``safe_globals``). The defaults grew between releases, and a few behaviours changed (which opcodes may
fill which objects, whether ``NEWOBJ`` may build a default class, how user entries are keyed). This
module records both per release, from each release's own ``_weights_only_unpickler.py``,
``serialization.py``, ``_utils.py`` and ``storage.py`` (2.4.0 to 2.14.0; patch releases share their
x.y.0's unpickler). ``tests/test_weights_only_table.py`` checks the entry of the installed torch against
that torch's own ``_get_allowed_globals()``, so the table cannot go stale silently.

Dtype, legacy tensor-class and storage-class keys are ``str(obj)`` of the running build, e.g.
``torch.float32``, ``torch.cuda.FloatTensor``, ``torch.cuda.FloatStorage`` (present in CPU builds too).
"""
from __future__ import annotations

from dataclasses import dataclass

VERSIONS = ("2.4", "2.5", "2.6", "2.7", "2.8", "2.9", "2.10", "2.11", "2.12", "2.13", "2.14")
NEWEST = VERSIONS[-1]

_TENSOR_TYPES = ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte")
_STORAGE_TYPES = ("BFloat16", "Bool", "Byte", "Char", "ComplexDouble", "ComplexFloat", "Double", "Float", "Half",
                  "Int", "Long", "Short")
_QSTORAGE_TYPES = ("QInt32", "QInt8", "QUInt2x4", "QUInt4x2", "QUInt8")

# Present in 2.4.0 and every later release (nothing has been removed since).
_SINCE_2_4 = (
    "collections.OrderedDict", "collections.Counter", "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout", "torch.Size", "torch.Tensor", "torch.device",
    # dtypes: torch.storage._dtype_to_storage_type_map() and _new_dtypes()
    *(f"torch.{d}" for d in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool",
                             "bfloat16", "complex128", "complex64", "qint8", "qint32", "quint8", "quint4x2",
                             "quint2x4", "bits16", "bits1x8", "bits2x4", "bits4x2", "bits8", "complex32",
                             "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz")),
    # torch._tensor_classes
    *(f"torch.{t}Tensor" for t in (*_TENSOR_TYPES, "Bool")),
    *(f"torch.cuda.{t}Tensor" for t in (*_TENSOR_TYPES, "Bool")),
    *(f"torch.sparse.{t}Tensor" for t in _TENSOR_TYPES),
    *(f"torch.cuda.sparse.{t}Tensor" for t in _TENSOR_TYPES),
    # torch._storage_classes
    *(f"torch.{t}Storage" for t in (*_STORAGE_TYPES, *_QSTORAGE_TYPES)),
    *(f"torch.cuda.{t}Storage" for t in _STORAGE_TYPES),
    "torch.storage.TypedStorage", "torch.storage.UntypedStorage",
    # quantization schemes
    "torch.per_tensor_affine", "torch.per_tensor_symmetric", "torch.per_channel_affine",
    "torch.per_channel_symmetric", "torch.per_channel_affine_float_qparams",
    # _tensor_rebuild_functions()
    *(f"torch._utils.{f}" for f in ("_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_qtensor",
                                    "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3",
                                    "_rebuild_sparse_tensor", "_rebuild_meta_tensor_no_storage",
                                    "_rebuild_nested_tensor", "_rebuild_wrapper_subclass")),
    "torch._tensor._rebuild_from_type_v2",
)

# Entries added by a release (the first release that allows them by default).
_ADDED = {
    "2.5": ("_codecs.encode", "builtins.bytearray", "torch._utils._rebuild_device_tensor_from_numpy"),
    "2.6": ("builtins.set", "builtins.complex", "torch._utils._rebuild_device_tensor_from_cpu_tensor",
            "torch.uint16", "torch.uint32", "torch.uint64"),
    "2.7": (*(f"torch.uint{n}" for n in range(1, 8)), *(f"torch.int{n}" for n in range(1, 8)),
            "torch.float8_e8m0fnu"),
    "2.8": ("torch.float4_e2m1fn_x2",),
}

# Globals torch registers with add_safe_globals when a module is imported: name -> the import. In 2.13
# ``import torch`` already registers the nested-tensor pair; the others need their module imported
# first, and from 2.6 torch's error says so instead of naming the global.
IMPORT_REGISTERED_SINCE = "2.6"
IMPORT_REGISTERED = {
    "torch.nested._internal.nested_tensor.NestedTensor": "torch.nested",
    "torch.nested._internal.nested_tensor._rebuild_njt": "torch.nested",
    "torch._dynamo.decorators._DimRange": "torch._dynamo",
    "torch.distributed.device_mesh.DeviceMesh": "torch.distributed.tensor",
    "torch.distributed.tensor._dtensor_spec.DTensorSpec": "torch.distributed.tensor",
    "torch.distributed.tensor._dtensor_spec.TensorMeta": "torch.distributed.tensor",
    "torch.distributed.tensor.DTensor": "torch.distributed.tensor",
    "torch.distributed.tensor.placement_types.Partial": "torch.distributed.tensor",
    "torch.distributed.tensor.placement_types.Replicate": "torch.distributed.tensor",
    "torch.distributed.tensor.placement_types.Shard": "torch.distributed.tensor",
}
# Registered by ``import torch`` itself (what a fresh process's torch.serialization.get_safe_globals() holds).
REGISTERED_BY_IMPORT_TORCH = {
    "2.13": ("torch.nested._internal.nested_tensor.NestedTensor", "torch.nested._internal.nested_tensor._rebuild_njt",
             "torch.distributed._mesh_layout._FlatLayout", "torch.distributed._mesh_layout._MeshLayout"),
}

# Modules whose globals the unpickler refuses even when allowlisted (2.5+; ``os.system`` pickles as posix.system).
BLOCKED_MODULES = ("sys", "os", "posix", "nt")


def key(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


@dataclass(frozen=True)
class Release:
    """One torch release's weights-only rules (``version`` is "major.minor")."""

    version: str

    def at_least(self, version: str) -> bool:
        return key(self.version) >= key(version)

    @property
    def default_allowed(self) -> frozenset[str]:
        """The keys of ``_get_allowed_globals()``."""
        names = set(_SINCE_2_4)
        for since, added in _ADDED.items():
            if self.at_least(since):
                names.update(added)
        return frozenset(names)

    @property
    def registered_by_import_torch(self) -> frozenset[str]:
        for since in sorted(REGISTERED_BY_IMPORT_TORCH, key=key, reverse=True):
            if self.at_least(since):
                return frozenset(REGISTERED_BY_IMPORT_TORCH[since])
        return frozenset()

    # -- behaviours ------------------------------------------------------------------------------------
    @property
    def weights_only_default(self) -> bool:
        """torch.load(FILE) uses the weights-only unpickler unless told otherwise (2.6+; 2.4/2.5 warn)."""
        return self.at_least("2.6")

    @property
    def has_safe_globals_context(self) -> bool:
        """``torch.serialization.safe_globals([...])`` exists (2.5+); ``add_safe_globals`` is 2.4+."""
        return self.at_least("2.5")

    @property
    def has_tuple_entries(self) -> bool:
        """Allowlist entries may be ``(obj, "module.name")`` pairs (2.6+)."""
        return self.at_least("2.6")

    @property
    def blocks_modules(self) -> bool:
        """Globals of sys/os/posix/nt are refused even when allowlisted (2.5+)."""
        return self.at_least("2.5")

    @property
    def builds_slots(self) -> bool:
        """BUILD handles the ``(dict, slotstate)`` state of classes with ``__slots__`` (2.6+)."""
        return self.at_least("2.6")

    @property
    def setitems_on_dicts_only(self) -> bool:
        """SETITEM(S) only into exact dict / OrderedDict / Counter (2.10+): no defaultdict, no dict subclass."""
        return self.at_least("2.10")

    @property
    def appends_to_list_subclasses(self) -> bool:
        """APPEND(S) into allowlisted list subclasses too (2.14+); before, exact lists only."""
        return self.at_least("2.14")

    @property
    def refuses_torchscript(self) -> bool:
        """A TorchScript archive raises under weights_only (2.6+); 2.4/2.5 pass it to torch.jit.load."""
        return self.at_least("2.6")

    @property
    def refuses_tar(self) -> bool:
        """The torch < 0.1.10 tar format raises under weights_only (2.6+)."""
        return self.at_least("2.6")

    @property
    def loads_safetensors(self) -> bool:
        """``torch.load("x.safetensors")`` (by suffix) goes to safetensors.torch.load_file (2.13+)."""
        return self.at_least("2.13")

    @property
    def import_registered(self) -> bool:
        """NJT / DTensor globals are registered when their modules are imported (2.6+)."""
        return self.at_least(IMPORT_REGISTERED_SINCE)


def release(version: str) -> Release:
    """The table's entry for ``version`` ("2.5", "2.5.1", "2.6.0+cu124"); raises ValueError if unknown."""
    text = str(version).strip().lower().removeprefix("torch").removeprefix("==").strip()
    parts = text.split("+")[0].split(".")
    try:
        short = f"{int(parts[0])}.{int(parts[1])}"
    except (IndexError, ValueError):
        raise ValueError(f"{version!r} is not a torch version (e.g. 2.5 or 2.6.0)") from None
    if short not in VERSIONS:
        raise ValueError(f"torch {short} is not in the weights-only table (it knows {VERSIONS[0]} to {NEWEST})")
    return Release(short)


def nearest(version: str | None) -> Release:
    """The table's entry for an installed torch: its own release, or the newest known one for a newer
    or unparsable version (and the oldest for one before 2.4)."""
    if version is None:
        return Release(NEWEST)
    try:
        return release(version)
    except ValueError:
        pass
    try:
        parts = str(version).split("+")[0].split(".")
        k = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        return Release(NEWEST)
    return Release(VERSIONS[0]) if k < key(VERSIONS[0]) else Release(NEWEST)
