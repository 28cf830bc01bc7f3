"""The ctypes mirror against include/bnorm.h: the header is parsed and every
struct field, enum value and macro compared; then each bnormConfig_t field
is set out of range in turn and the library's message must name that very
field, which shows the offsets agree with the library's compiled layout."""

import ctypes
import os
import re
import subprocess
import sys

import torch

import bnorm
from bnorm import _ffi
from bnorm.functional import _Call, _make_config, describe

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "include", "bnorm.h")


def _header():
    with open(HEADER) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return text


def _struct_fields(text, name):
    m = re.search(r"typedef struct \{([^}]*)\}\s*%s;" % name, text)
    assert m, name
    return [re.match(r".*?(\w+)\s*$", decl.strip()).group(1)
            for decl in m.group(1).split(";") if decl.strip()]


def test_structs_mirror_the_header():
    text = _header()
    for cls in (_ffi.bnormTensorDesc_t, _ffi.bnormConfig_t):
        assert [f[0] for f in cls._fields_] == _struct_fields(text, cls.__name__), cls.__name__


def test_enums_and_macros_mirror_the_header():
    text = _header()
    found = 0
    for name, value in re.findall(r"\b(BNORM_(?:STATUS|DATA|LAYOUT|AVERAGE|PATH|EPILOGUE)_\w+)\s*=\s*(\d+)",
                                  text):
        assert getattr(_ffi, name) == int(value), name
        found += 1
    assert found >= 13 + 3 + 2 + 2 + 3 + 3
    for name in ("BNORM_VERSION_MAJOR", "BNORM_VERSION_MINOR", "BNORM_VERSION_PATCH"):
        assert getattr(_ffi, name) == int(re.search(r"#define %s (\d+)" % name, text).group(1))
    magic = re.search(r"#define BNORM_CONFIG_MAGIC (0x[0-9a-fA-F]+)u", text).group(1)
    assert _ffi.BNORM_CONFIG_MAGIC == int(magic, 16)
    init = re.search(r"#define BNORM_CONFIG_INITIALIZER[^{]*\{([^}]*)\}", text).group(1)
    init = [v.strip() for v in init.replace("\\", " ").split(",")]
    cfg = _ffi.config_initializer()
    assert init[3:5] == ["1e-5", "0.1"] and (cfg.eps, cfg.exponential_average_factor) == (1e-5, 0.1)
    assert init[5:] == ["BNORM_AVERAGE_EXPONENTIAL", "BNORM_PATH_AUTO", "BNORM_EPILOGUE_NONE",
                        "NULL", "NULL", "NULL", "0"]
    assert (cfg.average, cfg.path, cfg.epilogue, cfg.relu_mask_bytes) == (0, 0, 0, 0)
    assert cfg.size == ctypes.sizeof(_ffi.bnormConfig_t) == 80
    assert ctypes.sizeof(_ffi.bnormTensorDesc_t) == 32


def test_loaded_library_version():
    lib = _ffi.load("emu")
    assert lib.version == _ffi.BNORM_VERSION == bnorm.BNORM_VERSION
    assert lib.path.endswith("libbnorm_emu.so")


def _forward_training(cfg):
    """bnormForwardTraining on a small CPU tensor with this config."""
    x = torch.randn(4, 3, 5)
    y = torch.empty_like(x)
    rm, rv = torch.zeros(3), torch.ones(3)
    desc, _ = describe(x)
    with _Call(x) as call:
        ws, ws_ptr, ws_bytes = call.workspace("bnormGetForwardTrainingWorkspaceSize", desc,
                                              _make_config(1e-5, 0.1, "auto"))
        status = call.lib.cdll.bnormForwardTraining(
            call.handle, None, ctypes.byref(desc), ctypes.byref(cfg), x.data_ptr(), y.data_ptr(),
            None, None, rm.data_ptr(), rv.data_ptr(), None, None, None, ws_ptr, ws_bytes)
        return status, call.lib.last_error_message(), y, x


def test_config_fields_reach_the_library_at_their_offsets():
    status, msg, y, x = _forward_training(_ffi.config_initializer())
    assert status == 0 and msg == ""
    assert torch.allclose(y, torch.nn.functional.batch_norm(x, None, None, training=True),
                          atol=1e-5)
    off = {f[0]: getattr(_ffi.bnormConfig_t, f[0]).offset for f in _ffi.bnormConfig_t._fields_}
    cases = [
        ("size", off["average"], "config->size"),          # shorter than any config
        ("magic", 0x12345678, "config->magic (0x12345678)"),
        ("eps", -2.0, "config->eps (-2)"),
        ("exponential_average_factor", 1.25, "config->exponential_average_factor (1.25)"),
        ("average", 7, "config->average (7)"),
        ("path", 9, "config->path (9)"),
        ("epilogue", 5, "config->epilogue (5)"),
    ]
    for field, value, words in cases:
        cfg = _ffi.config_initializer()
        setattr(cfg, field, value)
        status, msg, _, _ = _forward_training(cfg)
        assert status == _ffi.BNORM_STATUS_INVALID_VALUE, field
        assert words in msg, (field, msg)
    # A config as long as version 0's (before `path`) is valid, and the library
    # does not read the path field beyond its size.
    cfg = _ffi.config_initializer()
    cfg.size = off["path"]
    cfg.path = 9
    assert _forward_training(cfg)[0] == 0


def test_status_strings():
    lib = _ffi.load("emu")
    assert lib.status_string(105).startswith("BNORM_STATUS_BATCH_TOO_SMALL")
    assert lib.status_string(12345) == "unknown status"


def test_library_not_found_names_the_places():
    code = ("import bnorm, torch\n"
            "try:\n"
            "    bnorm.BatchNorm1d(2)(torch.ones(3, 2))\n"
            "except OSError as e:\n"
            "    print('OSError:', e)\n")
    env = dict(os.environ, BNORM_LIBRARY_DIR="/nonexistent/bnorm-libs")
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(bnorm.__file__)))
    env["PYTHONPATH"] = pkg
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert "OSError:" in out.stdout, out.stderr
    assert "libbnorm_emu.so" in out.stdout and "/nonexistent/bnorm-libs" in out.stdout


def test_default_library_dir_is_the_build_folder():
    dirs = _ffi.library_dirs()
    if os.environ.get("BNORM_LIBRARY_DIR"):
        assert dirs == [os.environ["BNORM_LIBRARY_DIR"]]
    else:
        assert dirs[-1].endswith(os.path.join("", "build"))
