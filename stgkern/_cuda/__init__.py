"""CUDA backend: launch wrappers ``stgkern._cuda.<op>`` over the kernels in ``csrc/cuda``.

Importing this package imports neither CuPy nor touches a GPU; kernels are
loaded (prebuilt fatbin, else NVRTC) on first launch.  See ``_loader``.
"""
from __future__ import annotations


def info() -> dict:
    """Describe the GPU backend for ``stgkern info``.

    Returns a dict with ``available`` (CuPy and a device found), ``device``
    (name and compute capability), ``paths`` (op -> ``"prebuilt"`` or
    ``"nvrtc (...)"`` for the ops loaded so far), ``loaded`` (kernel
    instantiations), ``prebuilt_available`` and ``source_root``.
    """
    from . import _loader

    out = {"available": False, "device": None, "reason": None}
    try:
        import cupy
        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        out["device"] = {"id": dev.id, "name": name.decode() if isinstance(name, bytes) else str(name),
                         "compute_capability": dev.compute_capability}
        out["available"] = True
    except Exception as exc:  # no CuPy, no driver, no device
        out["reason"] = f"{type(exc).__name__}: {exc}"
    out.update(_loader.info())
    return out
