"""The allowlist: our own implementations of the globals a checkpoint legitimately names.

Each entry re-implements, on plain data, what the named function would do: tensor rebuilders make
:class:`TensorRef` handles, ``collections.OrderedDict`` makes a :class:`PickledDict`, numpy's array
reconstruction makes a real ``numpy.ndarray`` from the bytes in the pickle (never with object
dtype), and so on. Nothing here imports or calls what the file names; names not in the table
resolve to inert :class:`GlobalRef` values (see ``resolve``).
"""
from __future__ import annotations

import _compat_pickle
import re
from typing import Any

from ...model import dtypes
from ...model.objects import Buildable, GlobalRef, PickledDict, StandIn, TorchDevice, TorchEnum, TorchSize, Unreadable
from ...model.sparse import SparseTensorRef
from ...model.tensor import StorageRef, TensorRef, contiguous_strides
from ...source.regions import BytesRegion
from ...util.lazynp import is_integer, is_ndarray, np
from .danger import danger_reason
from .unpickler import Reconstructor

MAX_INLINE_ARRAY_BYTES = 1 << 31


class StorageType:
    """A storage class named in a persistent id (``torch.FloatStorage``, ``torch.UntypedStorage``)."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: dtypes.DType | None):
        self.name = name
        self.dtype = dtype            # None: untyped (sizes are bytes; the tensor gives the dtype)

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


class ClassMarker:
    """A class we recognise only as an argument (``numpy.ndarray``, ``torch.Tensor``, ``Parameter``)."""

    __slots__ = ("qualname",)

    def __init__(self, qualname: str):
        self.qualname = qualname

    def __repr__(self) -> str:
        return f"<class {self.qualname}>"


# -- argument checks ------------------------------------------------------------------------------
def _int(x: Any, what: str) -> int:
    if type(x) is bool or not is_integer(x):
        raise TypeError(f"{what} is a {type(x).__name__}, not an int")
    return int(x)


def _ints(x: Any, what: str) -> tuple[int, ...]:
    if type(x) is tuple and len(x) <= 64:
        for v in x:
            if type(v) is not int:
                break
        else:
            return x                       # the common case: a tuple of plain ints
    if not isinstance(x, (tuple, list)):
        raise TypeError(f"{what} is a {type(x).__name__}, not a tuple of ints")
    if len(x) > 64:
        raise ValueError(f"{what} has {len(x)} dimensions")
    return tuple(_int(v, what) for v in x)


def _dtype_arg(x: Any) -> dtypes.DType:
    if isinstance(x, TorchEnum) and x.kind == "dtype":
        found = dtypes.by_name(x.name)
        if found:
            return found
    raise ValueError(f"unknown dtype {x!r}")


def _storage_arg(x: Any) -> StorageRef:
    if isinstance(x, StorageRef):
        return x
    if isinstance(x, Unreadable):
        raise ValueError(f"its storage is unreadable ({x.reason})")
    raise TypeError(f"storage is a {type(x).__name__}")


def _bool(x: Any) -> bool:
    if isinstance(x, (bool, int)):
        return bool(x)
    return bool(x) if type(x).__name__ == "bool" and type(x).__module__ == "numpy" else False


# -- tensors --------------------------------------------------------------------------------------
def _tensor(storage: Any, offset: Any, size: Any, stride: Any, dtype: dtypes.DType | None,
            requires_grad: Any = False) -> TensorRef:
    st = storage if type(storage) is StorageRef else _storage_arg(storage)
    dt = dtype or st.dtype
    if dt is None:
        raise ValueError("an untyped storage without a dtype")
    if st.dtype is None:
        st.dtype = dt
    shape = _ints(size, "size")
    strides = _ints(stride, "stride") if stride is not None else contiguous_strides(shape)
    return TensorRef(st, offset if type(offset) is int else _int(offset, "storage offset"), shape, strides, dt,
                     requires_grad=requires_grad is True or (requires_grad is not False and _bool(requires_grad)))


def rebuild_tensor(args, ctx):            # torch._utils._rebuild_tensor (torch 0.3/0.4 files)
    storage, offset, size, stride = args
    return _tensor(storage, offset, size, stride, None)


def rebuild_tensor_v2(args, ctx):         # (storage, offset, size, stride, requires_grad, hooks[, metadata])
    if not 6 <= len(args) <= 7:
        raise TypeError(f"{len(args)} arguments, expected 6 or 7")
    return _tensor(args[0], args[1], args[2], args[3], None, args[4])


def rebuild_tensor_v3(args, ctx):         # (storage, offset, size, stride, requires_grad, hooks, dtype[, metadata])
    if not 7 <= len(args) <= 8:
        raise TypeError(f"{len(args)} arguments, expected 7 or 8")
    return _tensor(args[0], args[1], args[2], args[3], _dtype_arg(args[6]), args[4])


def rebuild_parameter(args, ctx):         # (data, requires_grad, backward_hooks)
    data = args[0]
    if not isinstance(data, TensorRef):
        raise TypeError(f"parameter data is a {type(data).__name__}")
    data.kind = "parameter"
    data.requires_grad = _bool(args[1]) if len(args) > 1 else True
    return data


def rebuild_parameter_with_state(args, ctx):  # (data, requires_grad, backward_hooks, state)
    data = rebuild_parameter(args[:3], ctx)
    if len(args) > 3 and args[3]:
        data.extra = {**(data.extra or {}), "state": args[3]}
    return data


def rebuild_from_type_v2(args, ctx):      # (func, new_type, args, state): a tensor subclass
    func, new_type, inner_args, state = args
    if isinstance(func, Reconstructor) and func.fn is not None and isinstance(inner_args, tuple):
        tensor = func.fn(inner_args, ctx)
    else:
        raise TypeError("rebuild function is not a known tensor rebuilder")
    if isinstance(tensor, TensorRef):
        name = getattr(new_type, "qualname", None)
        if name == "torch.nn.parameter.Parameter":
            tensor.kind = "parameter"
        elif name not in (None, "torch.Tensor", "torch._tensor.Tensor", _NJT_CLASS):
            tensor.subclass = name
        if state:
            tensor.extra = {**(tensor.extra or {}), "state": state}
    return tensor


def rebuild_from_type(args, ctx):         # older form: (func, type, args, dict)
    return rebuild_from_type_v2(args, ctx)


def rebuild_qtensor(args, ctx):  # (storage, offset, size, stride, quantizer_params, requires_grad, hooks)
    t = _tensor(args[0], args[1], args[2], args[3], None, args[5] if len(args) > 5 else False)
    t.kind = "quantized"
    params = args[4] if isinstance(args[4], tuple) else ()
    scheme = params[0].name if params and isinstance(params[0], TorchEnum) else "unknown"
    q = {"qscheme": scheme}
    if scheme == "per_tensor_affine" and len(params) >= 3:
        q.update(scale=float(params[1]), zero_point=int(params[2]))
    elif len(params) >= 4:
        q.update(scales=params[1], zero_points=params[2], axis=params[3])
    t.extra = {"quantizer": q}
    return t


def rebuild_sparse_tensor(args, ctx):     # (layout, data)
    layout, data = args
    name = layout.name if isinstance(layout, TorchEnum) else "sparse"
    if not isinstance(data, tuple) or len(data) < 3:
        raise TypeError("sparse tensor data is not a tuple")
    if name == "sparse_coo":
        # (indices, values, size[, is_coalesced]); the flag arrived in torch 2.1
        indices, values, size = data[:3]
        parts = {"indices": indices, "values": values}
        coalesced = _bool(data[3]) if len(data) > 3 else None
    elif name in ("sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc"):
        if len(data) < 4:
            raise TypeError(f"{name} data has {len(data)} parts, expected 4")
        comp, plain, values, size = data[:4]
        parts = {"compressed_indices": comp, "plain_indices": plain, "values": values}
        coalesced = None
    else:
        raise ValueError(f"unknown sparse layout {name!r}")
    for part, t in parts.items():
        if not isinstance(t, TensorRef):
            raise TypeError(f"sparse {part} are not a tensor")
    t = SparseTensorRef(name, _ints(size, "size"), parts, coalesced=coalesced)
    t.validate()
    return t


def rebuild_device_tensor_from_numpy(args, ctx):  # (data: ndarray, dtype, device, requires_grad)
    data, dtype, device, requires_grad = args
    if not is_ndarray(data):
        raise TypeError("data is not a numpy array")
    dt = _dtype_arg(dtype)
    raw = np.ascontiguousarray(data)
    st = StorageRef(f"<inline {id(raw):x}>", dt, raw.nbytes, str(device), typed=True,
                    source=BytesRegion(raw.tobytes()))
    return TensorRef(st, 0, tuple(raw.shape), contiguous_strides(tuple(raw.shape)), dt,
                     requires_grad=_bool(requires_grad))


def rebuild_meta_tensor_no_storage(args, ctx):  # (dtype, size, stride, requires_grad)
    dtype, size, stride = args[:3]
    t = TensorRef(None, 0, _ints(size, "size"), _ints(stride, "stride"), _dtype_arg(dtype),
                  requires_grad=_bool(args[3]) if len(args) > 3 else False, kind="meta")
    return t


def rebuild_wrapper_subclass(args, ctx):  # (cls, dtype, size, stride, offset, layout, device, requires_grad)
    cls, dtype, size, stride, offset = args[:5]
    t = TensorRef(None, _int(offset, "offset"), _ints(size, "size"), _ints(stride, "stride"), _dtype_arg(dtype),
                  kind="wrapper")
    t.subclass = getattr(cls, "qualname", None)
    t.device_override = str(args[6]) if len(args) > 6 else None
    t.problem = "a wrapper tensor subclass without stored values"
    return t


def rebuild_nested_tensor(args, ctx):     # (buffer, sizes, strides, storage_offsets)
    buffer = args[0]
    if not isinstance(buffer, TensorRef):
        raise TypeError("nested buffer is not a tensor")
    buffer.kind = "nested"
    buffer.extra = {"nested_sizes": args[1], "nested_strides": args[2], "nested_offsets": args[3],
                    "nested_layout": "strided"}
    return buffer


_NJT_CLASS = "torch.nested._internal.nested_tensor.NestedTensor"


def rebuild_njt(args, ctx):               # torch.nested._internal.nested_tensor._rebuild_njt(constructor_kwargs)
    kwargs = args[0] if args else None
    if not isinstance(kwargs, dict):
        raise TypeError("jagged nested tensor arguments are not a dict")
    values, offsets = kwargs.get("values"), kwargs.get("offsets")
    if not isinstance(values, TensorRef) or not isinstance(offsets, TensorRef):
        raise TypeError("jagged nested tensor without values and offsets tensors")
    values.kind = "nested"
    values.extra = {**(values.extra or {}), "nested_layout": "jagged", "nested_offsets_jagged": offsets,
                    "nested_lengths": kwargs.get("lengths"), "ragged_idx": kwargs.get("_ragged_idx")}
    return values


def make_record(args, ctx):               # a plain data class torch files hold (rebuilt as an inert record)
    return StandIn(GlobalRef("torch._dynamo.decorators", "_DimRange"), tuple(args), via="NEWOBJ")


# -- torch values -----------------------------------------------------------------------------------
def make_size(args, ctx):
    return TorchSize(_ints(args[0], "torch.Size") if args else ())


def make_device(args, ctx):
    if not args or not isinstance(args[0], str):
        raise TypeError("device type is not a string")
    spec = args[0]
    if len(args) > 1 and args[1] is not None:
        return TorchDevice(spec, _int(args[1], "device index"))
    if ":" in spec:
        kind, _, index = spec.partition(":")
        return TorchDevice(kind, int(index))
    return TorchDevice(spec)


def get_layout(args, ctx):               # torch.serialization._get_layout("torch.sparse_coo")
    return TorchEnum("layout", str(args[0]).removeprefix("torch."))


def jit_restore_type_tag(args, ctx):     # torch.jit._pickle.restore_type_tag(value, type_str)
    return args[0]


def jit_build_list(args, ctx):           # torch.jit._pickle.build_intlist / build_tensorlist / ...
    return list(args[0]) if isinstance(args[0], (list, tuple)) else args[0]


# -- Python builtins and collections ----------------------------------------------------------------
def _iterable(x: Any, what: str) -> list:
    if isinstance(x, (list, tuple, set, frozenset)):
        return list(x)
    if isinstance(x, dict):
        return list(x)
    raise TypeError(f"{what} of a {type(x).__name__}")


def make_set(args, ctx):
    from .unpickler import _check_key
    return {_check_key(x) for x in _iterable(args[0], "set")} if args else set()


def make_frozenset(args, ctx):
    from .unpickler import _check_key
    return frozenset(_check_key(x) for x in _iterable(args[0], "frozenset")) if args else frozenset()


def make_list(args, ctx):
    return _iterable(args[0], "list") if args else []


def make_tuple(args, ctx):
    return tuple(_iterable(args[0], "tuple")) if args else ()


def make_dict(args, ctx, **kwargs):
    out: dict = {}
    if args:
        src = args[0]
        if isinstance(src, dict):
            out.update(src)
        else:
            from .unpickler import _check_key
            for pair in _iterable(src, "dict"):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise TypeError("dict() of something that is not pairs")
                out[_check_key(pair[0])] = pair[1]
    out.update(kwargs)
    return out


def make_ordered_dict(args, ctx):
    d = PickledDict()
    if args:
        d.update(make_dict(args[:1], ctx))
    return d


def make_defaultdict(args, ctx):
    d = PickledDict()
    d.type_name = "collections.defaultdict"
    factory = args[0] if args else None
    d.pickle_attrs["default_factory"] = getattr(factory, "qualname", factory)
    return d


def make_counter(args, ctx):
    d = make_ordered_dict(args, ctx)
    d.type_name = "collections.Counter"
    return d


def make_deque(args, ctx):
    return _iterable(args[0], "deque") if args else []


def make_bytes(args, ctx):
    if not args:
        return b""
    src = args[0]
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    if isinstance(src, str):
        return codecs_encode((src, args[1] if len(args) > 1 else "utf-8"), ctx)
    if isinstance(src, (list, tuple)) and all(isinstance(v, int) and 0 <= v < 256 for v in src):
        return bytes(src)
    raise TypeError("bytes() of an unsupported value (sizes are refused: they would allocate)")


def make_bytearray(args, ctx):
    return bytearray(make_bytes(args, ctx))


def make_complex(args, ctx):
    parts = [float(a) for a in args[:2] if isinstance(a, (int, float))]
    return complex(*parts)


def make_slice(args, ctx):
    return slice(*[a if a is None or isinstance(a, int) else None for a in args[:3]])


def make_range(args, ctx):
    return range(*[_int(a, "range bound") for a in args[:3]])


def make_int(args, ctx):
    if not args:
        return 0
    x = args[0]
    if isinstance(x, (int, float)):
        return int(x)
    if isinstance(x, (str, bytes)) and len(x) <= 100:
        return int(x, args[1]) if len(args) > 1 else int(x)
    raise TypeError("int() of an unsupported value")


def make_float(args, ctx):
    if not args:
        return 0.0
    x = args[0]
    if isinstance(x, (int, float)) or (isinstance(x, (str, bytes)) and len(x) <= 100):
        return float(x)
    raise TypeError("float() of an unsupported value")


def make_str(args, ctx):
    if not args:
        return ""
    x = args[0]
    if isinstance(x, str):
        return x
    if isinstance(x, bytes) and len(args) > 1:
        return x.decode(str(args[1]) if str(args[1]) in ("utf-8", "utf8", "latin1", "latin-1", "ascii") else "utf-8",
                        "replace")
    return str(x) if isinstance(x, (int, float, bool)) else "<str>"


def make_bool(args, ctx):
    return bool(args[0]) if args and isinstance(args[0], (int, float, bool, str)) else False


def codecs_encode(args, ctx):            # _codecs.encode(text, "latin1"): protocol 2's way to pickle bytes
    text = args[0]
    encoding = (args[1] if len(args) > 1 else "utf-8")
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise TypeError("_codecs.encode of non-text")
    enc = encoding.lower().replace("_", "-")
    if enc not in ("latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii"):
        raise ValueError(f"encoding {encoding!r} is not allowed")
    if enc in ("latin1", "latin-1", "iso-8859-1"):
        return _py2_bytes(text, ctx)        # a Python 2 str decoded as UTF-8 still stands for its bytes
    return text.encode(enc)


def copyreg_reconstructor(args, ctx):    # copyreg._reconstructor(cls, base, state): protocol 0/1 objects
    cls, base, state = args
    if isinstance(cls, Reconstructor) and cls.new is not None:
        return cls.new((), ctx)
    obj = StandIn(cls, (), via="copyreg._reconstructor")
    if state is not None:
        obj.state = {"__base_state__": state}
    return obj


def copyreg_newobj(args, ctx):           # copyreg.__newobj__(cls, *args)
    if not args:
        raise TypeError("__newobj__ without a class")
    cls = args[0]
    if isinstance(cls, Reconstructor) and cls.new is not None:
        return cls.new(tuple(args[1:]), ctx)
    return StandIn(cls, tuple(args[1:]), via="NEWOBJ")


def copyreg_newobj_ex(args, ctx):        # copyreg.__newobj_ex__(cls, args, kwargs)
    cls, cargs, kwargs = args
    return StandIn(cls, tuple(cargs) if isinstance(cargs, (tuple, list)) else (),
                   kwargs if isinstance(kwargs, dict) else None, via="NEWOBJ_EX")


# -- numpy ------------------------------------------------------------------------------------------
_NUMPY_SPEC = re.compile(r"^[<>|=]?(?:[biufcSUV]\d{1,4}|[?bBhHiIlLqQefdgFDGSUV]|bool|float\d+|int\d+|uint\d+|"
                         r"complex\d+|M8(?:\[\w+\])?|m8(?:\[\w+\])?)$")


class NumpyDType(Buildable):
    """``numpy.dtype(spec, align, copy)`` plus the byte order that BUILD sets."""

    def __init__(self, spec: str):
        if not isinstance(spec, str) or not _NUMPY_SPEC.match(spec):
            raise ValueError(f"numpy dtype {spec!r} is not a plain numeric type")
        self.dtype = np.dtype(spec)

    def pickle_build(self, state, ctx):
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            if state[1] in ("<", ">"):
                self.dtype = self.dtype.newbyteorder(state[1])
        if isinstance(state, tuple) and len(state) > 3 and state[3] is not None:
            raise ValueError("structured numpy dtypes are not supported")

    def finished(self):
        return self.dtype

    def __repr__(self):
        return f"dtype('{self.dtype.str}')"


class NumpyArrayPending(Buildable):
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``: becomes a real array on BUILD."""

    def __init__(self):
        self.array: np.ndarray | None = None

    def pickle_build(self, state, ctx):
        if not isinstance(state, tuple) or len(state) != 5:
            raise ValueError("numpy array state is not a 5-tuple")
        _version, shape, dtype, fortran, raw = state
        if not isinstance(dtype, NumpyDType):
            raise ValueError("numpy array dtype is not a plain dtype (object arrays are refused)")
        shape = _ints(shape, "numpy shape")
        if isinstance(raw, str):
            raw = _py2_bytes(raw, ctx)
        if not isinstance(raw, (bytes, bytearray)):
            raise ValueError("numpy array data is not bytes (object arrays are refused)")
        count = int(np.prod(shape)) if shape else 1
        if count * dtype.dtype.itemsize != len(raw):
            raise ValueError(f"numpy array declares {count} elements but carries {len(raw)} bytes")
        arr = np.frombuffer(bytes(raw), dtype=dtype.dtype, count=count)
        self.array = arr.reshape(shape, order="F" if fortran else "C")

    def finished(self):
        return self.array if self.array is not None else Unreadable("numpy array", "no data")


def _py2_bytes(text: str, ctx) -> bytes:
    """The bytes behind text that stands for bytes: a Python 2 ``str`` as the file held it, or what
    ``encoding='latin1'`` would have made (a byte per character) for a Python 3 pickle's text."""
    found = getattr(ctx, "py2_bytes", {}).get(text)
    return found if found is not None else text.encode("latin-1")


def numpy_reconstruct(args, ctx):
    return NumpyArrayPending()


def numpy_dtype(args, ctx):
    return NumpyDType(args[0])


def numpy_scalar(args, ctx):              # numpy.core.multiarray.scalar(dtype, bytes)
    dtype, raw = args[0], args[1] if len(args) > 1 else None
    if not isinstance(dtype, NumpyDType):
        raise ValueError("scalar dtype is not a plain dtype")
    if isinstance(raw, str):
        raw = _py2_bytes(raw, ctx)
    if not isinstance(raw, bytes) or len(raw) != dtype.dtype.itemsize:
        raise ValueError("numpy scalar data has the wrong size (object scalars are refused)")
    return np.frombuffer(raw, dtype=dtype.dtype)[0]


def numpy_frombuffer(args, ctx):          # numpy.core.numeric._frombuffer(buf, dtype, shape, order)
    buf, dtype, shape, order = args
    if not isinstance(dtype, NumpyDType) or not isinstance(buf, (bytes, bytearray)):
        raise ValueError("unsupported numpy buffer")
    shape = _ints(shape, "numpy shape")
    return np.frombuffer(bytes(buf), dtype=dtype.dtype).reshape(shape, order="F" if order == "F" else "C")


# -- the table ----------------------------------------------------------------------------------------
def _r(qual: str, fn, new=None) -> tuple[tuple[str, str], Reconstructor]:
    module, _, name = qual.rpartition(".")
    return (module, name), Reconstructor(module, name, fn, new)


_TENSOR_REBUILDERS = {
    "_rebuild_tensor": rebuild_tensor,
    "_rebuild_tensor_v2": rebuild_tensor_v2,
    "_rebuild_tensor_v3": rebuild_tensor_v3,
    "_rebuild_parameter": rebuild_parameter,
    "_rebuild_parameter_with_state": rebuild_parameter_with_state,
    "_rebuild_qtensor": rebuild_qtensor,
    "_rebuild_sparse_tensor": rebuild_sparse_tensor,
    "_rebuild_sparse_csr": rebuild_sparse_tensor,
    "_rebuild_device_tensor_from_numpy": rebuild_device_tensor_from_numpy,
    "_rebuild_xla_tensor": rebuild_device_tensor_from_numpy,
    "_rebuild_mtia_tensor": rebuild_device_tensor_from_numpy,
    "_rebuild_meta_tensor_no_storage": rebuild_meta_tensor_no_storage,
    "_rebuild_wrapper_subclass": rebuild_wrapper_subclass,
    "_rebuild_nested_tensor": rebuild_nested_tensor,
    "_rebuild_from_type": rebuild_from_type,
    "_rebuild_from_type_v2": rebuild_from_type_v2,
}

SAFE: dict[tuple[str, str], Any] = dict([
    *(_r(f"torch._utils.{name}", fn) for name, fn in _TENSOR_REBUILDERS.items()),
    _r("torch._tensor._rebuild_from_type_v2", rebuild_from_type_v2),
    _r("torch._tensor._rebuild_from_type", rebuild_from_type),
    _r("torch.Size", make_size),
    _r("torch.device", make_device),
    _r("torch.serialization._get_layout", get_layout),
    _r("torch.nested._internal.nested_tensor._rebuild_njt", rebuild_njt),
    # A dataclass (dim, min, max) in a jagged nested tensor's metadata cache: a record, nothing to run.
    _r("torch._dynamo.decorators._DimRange", make_record, make_record),
    _r("torch.jit._pickle.restore_type_tag", jit_restore_type_tag),
    *(_r(f"torch.jit._pickle.build_{k}list", jit_build_list) for k in ("int", "tensor", "double", "bool")),
    _r("collections.OrderedDict", make_ordered_dict, make_ordered_dict),
    _r("collections.defaultdict", make_defaultdict, make_defaultdict),
    _r("collections.Counter", make_counter, make_counter),
    _r("collections.deque", make_deque, make_deque),
    _r("builtins.set", make_set, make_set),
    _r("builtins.frozenset", make_frozenset, make_frozenset),
    _r("builtins.list", make_list, make_list),
    _r("builtins.tuple", make_tuple, make_tuple),
    _r("builtins.dict", make_dict, make_dict),
    _r("builtins.bytes", make_bytes, make_bytes),
    _r("builtins.bytearray", make_bytearray, make_bytearray),
    _r("builtins.complex", make_complex, make_complex),
    _r("builtins.slice", make_slice),
    _r("builtins.range", make_range),
    _r("builtins.int", make_int, make_int),
    _r("builtins.float", make_float, make_float),
    _r("builtins.str", make_str, make_str),
    _r("builtins.bool", make_bool),
    _r("builtins.object", None),
    _r("_codecs.encode", codecs_encode),
    _r("copyreg._reconstructor", copyreg_reconstructor),
    _r("copyreg.__newobj__", copyreg_newobj),
    _r("copyreg.__newobj_ex__", copyreg_newobj_ex),
    *(_r(f"numpy.{core}.multiarray._reconstruct", numpy_reconstruct) for core in ("core", "_core")),
    *(_r(f"numpy.{core}.multiarray.scalar", numpy_scalar) for core in ("core", "_core")),
    *(_r(f"numpy.{core}.numeric._frombuffer", numpy_frombuffer) for core in ("core", "_core")),
    _r("numpy.dtype", numpy_dtype),
])

_CLASS_MARKERS = {"numpy.ndarray", "torch.Tensor", "torch._tensor.Tensor", "torch.nn.parameter.Parameter",
                  "torch.nn.Parameter", _NJT_CLASS}
_LAYOUTS = {"strided", "sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc", "_mkldnn", "jagged"}
_MEMORY_FORMATS = {"contiguous_format", "channels_last", "channels_last_3d", "preserve_format"}
_QSCHEMES = {"per_tensor_affine", "per_channel_affine", "per_tensor_symmetric", "per_channel_symmetric",
             "per_channel_affine_float_qparams"}
_STORAGE_RE = re.compile(r"^(\w+)Storage$")


def _py3_names(module: str, name: str) -> tuple[str, str]:
    """Python 2 names that protocol 0-2 pickles use (``__builtin__.set``, ``copy_reg``)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def storage_type(module: str, name: str) -> StorageType | None:
    if name in ("UntypedStorage", "_UntypedStorage") and module in ("torch", "torch.storage", "torch.cuda"):
        return StorageType(f"{module}.{name}", None)
    m = _STORAGE_RE.match(name)
    if m and module in ("torch", "torch.cuda", "torch.storage"):
        dt = dtypes.BY_STORAGE.get(name)
        if dt is not None:
            return StorageType(f"{module}.{name}", dt)
    return None


def resolve(module: str, name: str) -> Any:
    """What ``GLOBAL module name`` means to us: a safe implementation, a value, or an inert name."""
    module, name = _py3_names(module, name)
    found = SAFE.get((module, name))
    if found is not None:
        return found
    qual = f"{module}.{name}"
    if module == "torch":
        dt = dtypes.by_name(name)
        if dt is not None:
            return TorchEnum("dtype", dt.name)
        if name in _LAYOUTS:
            return TorchEnum("layout", name)
        if name in _MEMORY_FORMATS:
            return TorchEnum("memory_format", name)
        if name in _QSCHEMES:
            return TorchEnum("qscheme", name)
    st = storage_type(module, name)
    if st is not None:
        return st
    if qual in _CLASS_MARKERS:
        return ClassMarker(qual)
    return GlobalRef(module, name, dangerous=danger_reason(module, name) is not None)


def classify(module: str, name: str) -> str:
    """"safe", "unknown" or "dangerous" for a global as a pickle names it."""
    found = resolve(module, name)
    if isinstance(found, GlobalRef):
        return "dangerous" if found.dangerous else "unknown"
    return "safe"


