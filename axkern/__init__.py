"""axkern: emulate approximate multipliers inside quantized neural-network arithmetic.

Multiplier toolkit (:class:`Multiplier`, :func:`metrics`, the shipped library), exact
LUT-based convolution and matrix products on NumPy arrays (:func:`axconv2d`,
:func:`axmatmul`, :func:`axdense`) with a NumPy reference, Cython/OpenMP and CUDA backends.
"""
from ._version import __version__
from .lut import Multiplier
from .metrics import ErrorMetrics, error_map, metrics

# Everything else is imported on first use, so that `import axkern` stays cheap and never
# needs optional dependencies (PyCUDA, scikit-learn, matplotlib).
_LAZY = {
    "list_multipliers": "library",
    "load_multiplier": "library",
    "axconv2d": "conv",
    "lut_conv2d": "conv",
    "axmatmul": "matmul",
    "axdense": "matmul",
    "lut_matmul": "matmul",
    "tune_weights": "tune",
}
_SUBMODULES = {"quant", "nn", "library", "conv", "matmul", "tune", "csource", "backends", "cuda",
               "survey", "torch", "keras", "onnx", "search"}

__all__ = ["__version__", "Multiplier", "ErrorMetrics", "error_map", "metrics", *_LAZY]


def __getattr__(name):
    import importlib

    if name in _LAZY:
        mod = importlib.import_module("." + _LAZY[name], __name__)
        value = getattr(mod, name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'axkern' has no attribute {name!r}")


# Submodules whose import needs an optional framework: importable by name, left out of
# dir(), since help(axkern) and inspect.getmembers get every name dir() lists (an ImportError
# there stopped help(axkern) on an install without the frameworks).
_NEEDS_FRAMEWORK = {"torch", "keras"}


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | (_SUBMODULES - _NEEDS_FRAMEWORK))
