"""Build script: the Cython/OpenMP kernels and the hand-written SIMD C.

Metadata lives in pyproject.toml; this file only declares the compiled extensions and maps
the top-level ``multipliers/`` and ``cuda_src/`` folders into the installed package so that
the shipped C sources travel with it.
"""
import os
import sys

import numpy as np
from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError:  # pragma: no cover - pyproject.toml lists Cython as a build requirement
    sys.exit("building axkern needs Cython >= 3 (pip install Cython)")


def openmp_flags():
    if sys.platform == "darwin":
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    if sys.platform == "win32":
        return ["/openmp"], []
    return ["-fopenmp"], ["-fopenmp"]


omp_compile, omp_link = openmp_flags()
base_compile = ["-O3"] if sys.platform != "win32" else ["/O2"]
numpy_macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]

# Each entry: module name, sources. Cython modules (.pyx) get NumPy headers and OpenMP.
EXTENSIONS = [
    ("axkern._fast", ["axkern/_fast.pyx"] + [
        f"axkern/_simd/{name}.c" for name in (
            "axsimd", "expand", "factored", "depthwise", "kern_scalar", "kern_avx2", "kern_avx512",
            "quantize", "epilogue", "gradtab")]),
]


def make_extensions():
    exts = []
    for name, sources in EXTENSIONS:
        missing = [s for s in sources if not os.path.exists(s)]
        if missing:
            raise SystemExit(f"setup.py: extension {name} lists missing sources {missing}")
        exts.append(
            Extension(
                name,
                sources,
                include_dirs=[np.get_include(), "axkern/_simd"],
                define_macros=numpy_macros,
                extra_compile_args=base_compile + omp_compile,
                extra_link_args=omp_link,
            )
        )
    return cythonize(
        exts,
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
    )


setup(
    packages=["axkern", "axkern._multipliers", "axkern._cuda_src"],
    package_dir={"axkern._multipliers": "multipliers", "axkern._cuda_src": "cuda_src"},
    package_data={
        "axkern": ["data/*.npz", "_simd/*.h", "_simd/*.c"],
        "axkern._multipliers": ["*.c"],
        "axkern._cuda_src": ["*.cu", "*.cuh", "*.h"],
    },
    ext_modules=make_extensions(),
)
