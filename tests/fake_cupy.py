"""A test double for CuPy: numpy underneath, with CuPy's rules on the host/device boundary.

The GPU branches of the solvers (``xp is not np``) run in CI through this
module, with no GPU. A device array here is :class:`ndarray`, a wrapper around
a numpy array that behaves as CuPy's does where code most often goes wrong:

- implicit conversion to numpy raises ``TypeError`` (``np.asarray(d)``,
  scipy on a device array, a device array in a numpy expression);
- numpy arrays in a device expression, as an index or as an assigned value,
  raise ``TypeError`` (CuPy raises for mixed operands);
- numpy functions applied to device arrays raise (code must call the ``xp``
  namespace; CuPy dispatches some of them, so this is stricter);
- reductions give 0-d device arrays, and ``float()`` of one is a transfer.

Every explicit crossing (``asarray`` of host data, ``.get()``, ``asnumpy``,
``float``/``int``/``bool`` of a device scalar) is counted in :data:`LEDGER`,
so a test can assert that a solve moves only its right-hand side and solution.
Sparse matrices (``cupyx.scipy.sparse``) and ``cupyx.scipy.sparse.linalg.SuperLU``
(a host factor whose solves take device arrays, as CuPy's) are enough for the solvers.

Use :func:`install` (a pytest ``monkeypatch``) to make ``import cupy`` return it.
"""

from __future__ import annotations

import sys
import types

import numpy as np


class Ledger:
    """Host/device crossings since :meth:`reset`: counts and bytes each way."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.h2d = self.d2h = 0
        self.h2d_bytes = self.d2h_bytes = 0

    def to_device(self, nbytes):
        self.h2d += 1
        self.h2d_bytes += int(nbytes)

    def to_host(self, nbytes):
        self.d2h += 1
        self.d2h_bytes += int(nbytes)


LEDGER = Ledger()

_SCALARS = (int, float, bool, complex, np.generic)


def _implicit(what):
    return TypeError(f"Implicit conversion to a NumPy array is not allowed ({what}). Please use `.get()` "
                     "to construct a NumPy array explicitly.")


def _unwrap(obj, what="operand"):
    """The numpy data of a device value; scalars pass; host arrays raise (mixed operands)."""
    if isinstance(obj, ndarray):
        return obj._a
    if isinstance(obj, np.ndarray):
        raise TypeError(f"Unsupported type {type(obj)} as {what} of a device operation: move it with cupy.asarray")
    if isinstance(obj, (tuple, list)):
        return type(obj)(_unwrap(o, what) for o in obj)
    return obj


def _wrap(obj):
    if isinstance(obj, np.ndarray):
        return ndarray(obj)
    if isinstance(obj, np.generic):  # CuPy reductions return 0-d device arrays
        return ndarray(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


class ndarray:  # noqa: N801  (CuPy's name)
    """A device array: numpy data that refuses to mix with the host (module docstring)."""

    __array_priority__ = 1000

    def __init__(self, a: np.ndarray):
        self._a = a

    # -- the boundary ---------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise _implicit("__array__")

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} called on a device array: use the cupy namespace (xp.{func.__name__})")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.pop("out", None)
        args = [_unwrap(i) for i in inputs]
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o, "out") for o in out)
        result = getattr(ufunc, method)(*args, **kwargs)
        return out[0] if out is not None and len(out) == 1 else _wrap(result)

    def get(self):
        LEDGER.to_host(self._a.nbytes)
        return self._a.copy()

    def _scalar(self):
        if self._a.size != 1:
            raise TypeError("only size-1 device arrays convert to Python scalars")
        LEDGER.to_host(self._a.itemsize)
        return self._a.reshape(()).item()

    def __float__(self):
        return float(self._scalar())

    def __int__(self):
        return int(self._scalar())

    def __bool__(self):
        return bool(self._scalar())

    def item(self):
        return self._scalar()

    def __iter__(self):
        return (ndarray(np.asarray(v)) for v in self._a)

    def __len__(self):
        return len(self._a)

    def __repr__(self):
        return f"fake_cupy.ndarray(shape={self.shape}, dtype={self.dtype})"

    # -- attributes ---------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    T = property(lambda self: ndarray(self._a.T))
    flags = property(lambda self: self._a.flags)

    # -- indexing -------------------------------------------------------------------------------
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, "index")])

    def __setitem__(self, key, value):
        self._a[_unwrap(key, "index")] = _unwrap(value, "assigned value")

    # -- methods --------------------------------------------------------------------------------
    def reshape(self, *shape, **kw):
        return ndarray(self._a.reshape(*shape, **kw))

    def ravel(self):
        return ndarray(self._a.ravel())

    def astype(self, dtype, copy=True):
        return ndarray(self._a.astype(dtype, copy=copy))

    def copy(self, order="C"):
        return ndarray(self._a.copy(order=order))

    def fill(self, value):
        self._a.fill(_unwrap(value))

    def transpose(self, *axes):
        return ndarray(self._a.transpose(*axes))

    def view(self, dtype=None):
        return ndarray(self._a.view() if dtype is None else self._a.view(dtype))

    def dot(self, other):
        return _wrap(self._a.dot(_unwrap(other)))

    def _reduce(name):  # noqa: N805
        def f(self, *args, **kw):
            return _wrap(getattr(self._a, name)(*_unwrap(args), **{k: _unwrap(v) for k, v in kw.items()}))
        f.__name__ = name
        return f

    sum, max, min, mean = _reduce("sum"), _reduce("max"), _reduce("min"), _reduce("mean")
    any, all, nonzero = _reduce("any"), _reduce("all"), _reduce("nonzero")

    # -- operators --------------------------------------------------------------------------------
    def _binary(ufunc, reflected=False):  # noqa: N805
        def f(self, other):
            if not isinstance(other, (ndarray, *_SCALARS)):
                if isinstance(other, np.ndarray):
                    raise TypeError(f"Unsupported type {type(other)}: a numpy array in a device expression")
                return NotImplemented
            a, b = (_unwrap(other), self._a) if reflected else (self._a, _unwrap(other))
            return _wrap(ufunc(a, b))
        return f

    def _inplace(ufunc):  # noqa: N805
        def f(self, other):
            ufunc(self._a, _unwrap(other), out=self._a, casting="same_kind")
            return self
        return f

    __add__, __radd__, __iadd__ = _binary(np.add), _binary(np.add, True), _inplace(np.add)
    __sub__, __rsub__, __isub__ = _binary(np.subtract), _binary(np.subtract, True), _inplace(np.subtract)
    __mul__, __rmul__, __imul__ = _binary(np.multiply), _binary(np.multiply, True), _inplace(np.multiply)
    __truediv__, __rtruediv__, __itruediv__ = (_binary(np.true_divide), _binary(np.true_divide, True),
                                               _inplace(np.true_divide))
    __floordiv__, __mod__, __pow__ = _binary(np.floor_divide), _binary(np.mod), _binary(np.power)
    __matmul__, __rmatmul__ = _binary(np.matmul), _binary(np.matmul, True)
    __and__, __or__, __xor__ = _binary(np.logical_and), _binary(np.logical_or), _binary(np.logical_xor)
    __lt__, __le__, __gt__, __ge__ = _binary(np.less), _binary(np.less_equal), _binary(np.greater), \
        _binary(np.greater_equal)
    __eq__, __ne__ = _binary(np.equal), _binary(np.not_equal)
    __hash__ = None

    def __neg__(self):
        return ndarray(-self._a)

    def __abs__(self):
        return ndarray(np.abs(self._a))

    def __invert__(self):
        return ndarray(~self._a)

    del _binary, _inplace, _reduce


# -- the cupy namespace ------------------------------------------------------------------------------
def asarray(a, dtype=None, order=None):
    """Device copy of host data (a transfer), or the device array itself (cast if ``dtype``)."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    host = np.array(a, dtype=dtype, order=order or "K")
    LEDGER.to_device(host.nbytes)
    return ndarray(host)


def _forward(fn):
    def f(*args, **kw):
        return _wrap(fn(*_unwrap(args), **{k: _unwrap(v) for k, v in kw.items()}))
    f.__name__ = getattr(fn, "__name__", "function")
    return f


def __getattr__(name):  # the rest of the namespace: numpy's functions on device data, dtypes as they are
    obj = getattr(np, name)
    if callable(obj) and not isinstance(obj, type):
        return _forward(obj)
    return obj


linalg = types.SimpleNamespace(norm=_forward(np.linalg.norm))


class _Runtime:
    device_count = 1

    @classmethod
    def getDeviceCount(cls):  # noqa: N802  (CuPy's name)
        return cls.device_count


cuda = types.SimpleNamespace(runtime=_Runtime, Device=lambda *a: types.SimpleNamespace(synchronize=lambda: None))


# -- cupyx --------------------------------------------------------------------------------------------
def scatter_add(a, slices, value):
    np.add.at(a._a, _unwrap(slices, "index"), _unwrap(value))


class spmatrix:  # noqa: N801
    """A device sparse matrix: a scipy matrix that only multiplies device arrays."""

    def __init__(self, arg, fmt):
        if isinstance(arg, spmatrix):
            arg = arg._m
        else:
            LEDGER.to_device(arg.data.nbytes + getattr(arg, "indices", arg.data).nbytes)
        self._m = arg.asformat(fmt)

    shape = property(lambda self: self._m.shape)
    dtype = property(lambda self: self._m.dtype)
    nnz = property(lambda self: self._m.nnz)

    def get(self):
        LEDGER.to_host(self._m.data.nbytes)
        return self._m.copy()

    def astype(self, dtype):
        return type(self)(self._m.astype(dtype))

    def __matmul__(self, x):
        if not isinstance(x, ndarray):
            raise TypeError("a device sparse matrix multiplies device arrays only")
        return ndarray(np.asarray(self._m @ x._a))

    def __array__(self, dtype=None, copy=None):
        raise _implicit("sparse matrix")


def _sparse_class(fmt):
    return type(f"{fmt}_matrix", (spmatrix,), {"__init__": lambda self, arg: spmatrix.__init__(self, arg, fmt)})


csr_matrix, csc_matrix = _sparse_class("csr"), _sparse_class("csc")


class SuperLU:
    """CuPy's ``cupyx.scipy.sparse.linalg.SuperLU``: factored on the host, solves device arrays in the
    factor's dtype (float64 out, as CuPy)."""

    def __init__(self, lu):
        self._lu = lu
        self.shape, self.nnz = lu.shape, lu.nnz

    def solve(self, rhs, trans="N"):
        if not isinstance(rhs, ndarray):
            raise TypeError("ojb must be cupy.ndarray")
        return ndarray(self._lu.solve(rhs._a.astype(np.float64), trans=trans))


def install(monkeypatch) -> types.ModuleType:
    """Make ``import cupy`` and ``import cupyx...`` return this double for one test; returns the cupy module."""
    LEDGER.reset()
    cupy = sys.modules[__name__]
    linalg_mod = types.ModuleType("cupyx.scipy.sparse.linalg")
    linalg_mod.SuperLU = SuperLU
    sparse_mod = types.ModuleType("cupyx.scipy.sparse")
    sparse_mod.csr_matrix, sparse_mod.csc_matrix, sparse_mod.spmatrix = csr_matrix, csc_matrix, spmatrix
    sparse_mod.isspmatrix = lambda m: isinstance(m, spmatrix)
    sparse_mod.linalg = linalg_mod
    scipy_mod = types.ModuleType("cupyx.scipy")
    scipy_mod.sparse = sparse_mod
    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add, cupyx.scipy = scatter_add, scipy_mod
    for name, mod in {"cupy": cupy, "cupyx": cupyx, "cupyx.scipy": scipy_mod, "cupyx.scipy.sparse": sparse_mod,
                      "cupyx.scipy.sparse.linalg": linalg_mod}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return cupy
