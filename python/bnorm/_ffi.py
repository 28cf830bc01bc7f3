"""ctypes mirror of include/bnorm.h, the two libraries, handles and errors.

Two shared libraries export the same C API:

  libbnorm.so      the real one: CUDA tensors (device pointers, torch's stream)
  libbnorm_emu.so  the CPU emulator: CPU tensors (its "device" memory is host
                   memory, so a CPU tensor's data pointer is a valid argument)

They are found in $BNORM_LIBRARY_DIR, else in the CMake build folder next to
this package (<repo>/build), and loaded on first use, each with RTLD_LOCAL so
that the emulator's CUDA-runtime subset never leaks into the process.
"""

import ctypes
import os
import threading

# ---------------------------------------------------------------------------
# include/bnorm.h, mirrored. Keep in step with the header: tests/test_ffi.py
# parses the header and compares.

BNORM_VERSION_MAJOR = 0
BNORM_VERSION_MINOR = 2
BNORM_VERSION_PATCH = 0
BNORM_VERSION = BNORM_VERSION_MAJOR * 10000 + BNORM_VERSION_MINOR * 100 + BNORM_VERSION_PATCH

# bnormStatus_t
BNORM_STATUS_SUCCESS = 0
BNORM_STATUS_NULL_POINTER = 100
BNORM_STATUS_INVALID_VALUE = 101
BNORM_STATUS_BAD_SHAPE = 102
BNORM_STATUS_MISALIGNED = 103
BNORM_STATUS_WORKSPACE_TOO_SMALL = 104
BNORM_STATUS_BATCH_TOO_SMALL = 105
BNORM_STATUS_BAD_ALIASING = 106
BNORM_STATUS_BAD_HANDLE = 107
BNORM_STATUS_NOT_SUPPORTED = 200
BNORM_STATUS_CUDA_ERROR = 300
BNORM_STATUS_ALLOC_FAILED = 301
BNORM_STATUS_COMM_ERROR = 302
BNORM_STATUS_INTERNAL_ERROR = 900

# bnormDataType_t
BNORM_DATA_FLOAT = 0
BNORM_DATA_HALF = 1
BNORM_DATA_BFLOAT16 = 2

# bnormLayout_t
BNORM_LAYOUT_NCHW = 0
BNORM_LAYOUT_NHWC = 1

# bnormAverage_t
BNORM_AVERAGE_EXPONENTIAL = 0
BNORM_AVERAGE_CUMULATIVE = 1

# bnormPath_t
BNORM_PATH_AUTO = 0
BNORM_PATH_MULTI_PASS = 1
BNORM_PATH_SINGLE_BLOCK = 2
BNORM_PATH_PERSISTENT = 3

# bnormEpilogue_t
BNORM_EPILOGUE_NONE = 0
BNORM_EPILOGUE_RELU = 1
BNORM_EPILOGUE_ADD_RELU = 2

BNORM_CONFIG_MAGIC = 0xB7A0C0F1

_c_enum = ctypes.c_int  # a C enum of small values is an int on every ABI bnorm targets


class bnormTensorDesc_t(ctypes.Structure):
    _fields_ = [
        ("dtype", _c_enum),   # bnormDataType_t
        ("layout", _c_enum),  # bnormLayout_t
        ("n", ctypes.c_int64),
        ("c", ctypes.c_int64),
        ("spatial", ctypes.c_int64),
    ]


class bnormConfig_t(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("magic", ctypes.c_uint),
        ("version", ctypes.c_uint),
        ("eps", ctypes.c_double),
        ("exponential_average_factor", ctypes.c_double),
        ("average", _c_enum),  # bnormAverage_t
        ("path", _c_enum),     # bnormPath_t (added in 0.1)
        ("epilogue", _c_enum),  # bnormEpilogue_t (added in 0.2)
        ("residual", ctypes.c_void_p),
        ("residual_grad", ctypes.c_void_p),
        ("relu_mask", ctypes.c_void_p),
        ("relu_mask_bytes", ctypes.c_size_t),
    ]


def config_initializer():
    """BNORM_CONFIG_INITIALIZER."""
    return bnormConfig_t(ctypes.sizeof(bnormConfig_t), BNORM_CONFIG_MAGIC, BNORM_VERSION,
                         1e-5, 0.1, BNORM_AVERAGE_EXPONENTIAL, BNORM_PATH_AUTO,
                         BNORM_EPILOGUE_NONE, None, None, None, 0)


_p = ctypes.c_void_p
_status = ctypes.c_int
_handle_t = ctypes.c_void_p
_desc_p = ctypes.POINTER(bnormTensorDesc_t)
_cfg_p = ctypes.POINTER(bnormConfig_t)
_size_p = ctypes.POINTER(ctypes.c_size_t)

# name: (restype, argtypes)
_SIGNATURES = {
    "bnormGetStatusString": (ctypes.c_char_p, [_status]),
    "bnormGetLastErrorMessage": (ctypes.c_char_p, []),
    "bnormGetVersion": (ctypes.c_int, []),
    "bnormCreate": (_status, [ctypes.POINTER(_handle_t)]),
    "bnormDestroy": (_status, [_handle_t]),
    "bnormGetForwardTrainingWorkspaceSize": (_status, [_handle_t, _desc_p, _cfg_p, _size_p]),
    "bnormForwardTraining": (_status, [_handle_t, _p, _desc_p, _cfg_p, _p, _p, _p, _p, _p, _p,
                                       _p, _p, _p, _p, ctypes.c_size_t]),
    "bnormForwardInference": (_status, [_handle_t, _p, _desc_p, _cfg_p, _p, _p, _p, _p, _p, _p]),
    "bnormGetInferenceScaleShift": (_status, [_handle_t, _p, ctypes.c_int64, _cfg_p, _p, _p, _p,
                                              _p, _p, _p]),
    "bnormGetBackwardWorkspaceSize": (_status, [_handle_t, _desc_p, _cfg_p, _size_p]),
    "bnormBackward": (_status, [_handle_t, _p, _desc_p, _cfg_p, _p, _p, _p, _p, _p, _p, _p, _p,
                                _p, ctypes.c_size_t]),
    "bnormGetBackwardFrozenWorkspaceSize": (_status, [_handle_t, _desc_p, _cfg_p, _size_p]),
    "bnormBackwardFrozen": (_status, [_handle_t, _p, _desc_p, _cfg_p, _p, _p, _p, _p, _p, _p, _p,
                                      _p, _p, ctypes.c_size_t]),
}

# ---------------------------------------------------------------------------
# Errors


class BnormError(RuntimeError):
    """A bnorm call returned a status other than BNORM_STATUS_SUCCESS.

    Attributes: call (the C function), status (the bnormStatus_t value),
    status_string (bnormGetStatusString) and message (bnormGetLastErrorMessage,
    read on the calling thread right after the call)."""

    def __init__(self, call, status, status_string, message, prefix=None):
        self.call = call
        self.status = status
        self.status_string = status_string
        self.message = message
        # bnorm's message names the call and the argument; the status string
        # names the status and what it means.
        text = "%s (status %d, %s)" % (message or "%s failed" % call, status, status_string)
        super().__init__(text if prefix is None else "%s (%s)" % (prefix, text))


class BatchTooSmallError(BnormError, ValueError):
    """Training on one value per channel (n * spatial == 1). A ValueError, as
    torch.nn.BatchNorm raises for the same input."""


class UnsupportedInputError(ValueError):
    """An input bnorm cannot take (dtype, strides, device, shape); the message says why."""


# ---------------------------------------------------------------------------
# The libraries

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_LIB_NAMES = {"emu": "libbnorm_emu.so", "cuda": "libbnorm.so"}


def library_dirs():
    """Where the libraries are looked for, in order."""
    env = os.environ.get("BNORM_LIBRARY_DIR")
    if env:
        return [env]
    repo = os.path.dirname(os.path.dirname(_PACKAGE_DIR))  # python/bnorm -> repo
    return [os.path.join(_PACKAGE_DIR, "lib"), os.path.join(repo, "build")]


class Library:
    """One loaded shared library and its per-thread, per-device handles."""

    def __init__(self, kind, path):
        self.kind = kind
        self.path = path
        # RTLD_LOCAL: the emulator exports cuda* functions of its own; they must
        # never become visible to the rest of the process.
        self.cdll = ctypes.CDLL(path, mode=os.RTLD_LOCAL)
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(self.cdll, name)
            fn.restype = res
            fn.argtypes = args
        self.version = self.cdll.bnormGetVersion()
        if self.version // 100 != BNORM_VERSION // 100:
            raise ImportError("%s is bnorm %d, this binding mirrors bnorm.h %d (major.minor differ)"
                              % (path, self.version, BNORM_VERSION))
        self._local = threading.local()

    def last_error_message(self):
        m = self.cdll.bnormGetLastErrorMessage()
        return m.decode("utf-8", "replace") if m else ""

    def status_string(self, status):
        s = self.cdll.bnormGetStatusString(status)
        return s.decode("utf-8", "replace") if s else "unknown status"

    def error(self, call, status, prefix=None):
        """The exception for a failed call; must run on the thread that made it
        (bnorm's last-error message is per host thread)."""
        cls = BatchTooSmallError if status == BNORM_STATUS_BATCH_TOO_SMALL else BnormError
        return cls(call, status, self.status_string(status), self.last_error_message(), prefix)

    def call(self, name, *args):
        status = getattr(self.cdll, name)(*args)
        if status != BNORM_STATUS_SUCCESS:
            raise self.error(name, status)

    def handle(self, device_index):
        """This thread's handle for a device (a handle is used by one host
        thread at a time and belongs to the device current at its creation:
        the caller has made device_index current)."""
        handles = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = {}
        h = handles.get(device_index)
        if h is None:
            h = _Handle(self)
            handles[device_index] = h
        return h.value


class _Handle:
    def __init__(self, lib):
        self._destroy = lib.cdll.bnormDestroy
        self.value = _handle_t()
        lib.call("bnormCreate", ctypes.byref(self.value))

    def __del__(self):
        try:
            if self.value:
                self._destroy(self.value)
        except Exception:  # interpreter shutdown
            pass


_libs = {}
_libs_lock = threading.Lock()


def load(kind):
    """The library for 'emu' (CPU tensors) or 'cuda' (CUDA tensors)."""
    lib = _libs.get(kind)
    if lib is not None:
        return lib
    with _libs_lock:
        lib = _libs.get(kind)
        if lib is None:
            name = _LIB_NAMES[kind]
            dirs = library_dirs()
            for d in dirs:
                path = os.path.join(d, name)
                if os.path.exists(path):
                    break
            else:
                what = "the emulated bnorm (CPU tensors)" if kind == "emu" else \
                    "the CUDA bnorm (CUDA tensors)"
                raise OSError("bnorm: %s not found: looked for %s in %s; build it (cmake --build "
                              "build --target %s) or set BNORM_LIBRARY_DIR"
                              % (what, name, ", ".join(dirs), name[3:-3]))
            lib = Library(kind, path)
            _libs[kind] = lib
    return lib
