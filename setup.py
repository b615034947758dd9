"""Builds the Cython fast path; all metadata lives in pyproject.toml."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# EDUFILTER_SANITIZE=address builds an AddressSanitizer copy for fuzzing (see fuzz/).
sanitize = os.environ.get("EDUFILTER_SANITIZE", "")
compile_args = ["-O3"]
link_args: list[str] = []
if sanitize:
    compile_args = ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}"]
    link_args = [f"-fsanitize={sanitize}"]

extensions = [
    Extension(
        f"edufilter.{name}",
        [f"src/edufilter/{name}.pyx"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name in ("_fastpath", "_classify")
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
