"""Builds the compiled kernels (Cython, at install time); the rest of the
project's metadata is in ``pyproject.toml``."""

from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = [
    Extension(f"converter.{name}", [f"converter/{name}.pyx"],
              extra_compile_args=["-O3", "-fno-strict-aliasing"])
    for name in ("_marching", "_mesh", "_shape", "_text")
]

setup(ext_modules=cythonize(KERNELS, compiler_directives={"language_level": 3}, quiet=True))
