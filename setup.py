"""Builds the Cython extensions (every src/edufilter/**/_*.pyx); metadata lives in pyproject.toml."""

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

# EDUFILTER_SANITIZE=address builds an AddressSanitizer copy for fuzzing (scripts/fuzz-asan.sh).
sanitize = os.environ.get("EDUFILTER_SANITIZE", "")
compile_args = ["-O3"]
link_args: list[str] = []
if sanitize:
    compile_args = ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}"]
    link_args = [f"-fsanitize={sanitize}"]

# C libraries an extension links against, beyond libc.
LIBRARIES = {
    "_queue": ["netfilter_queue", "mnl"],
    "_quic": ["crypto"],  # OpenSSL's libcrypto: AES-GCM, AES-ECB, SHA-256 for QUIC Initials
}

# Each stage's Cython module lives in its stage's folder (capture/_queue.pyx, ...); the shared
# C headers stay beside _fastpath.pyx, so every extension gets that folder on its include path.
PACKAGE_ROOT = Path("src/edufilter")
HEADERS = [str(header) for header in sorted(PACKAGE_ROOT.glob("*.h"))]

extensions = [
    Extension(
        ".".join(path.relative_to("src").with_suffix("").parts),
        [str(path)],
        include_dirs=[str(PACKAGE_ROOT)],
        libraries=LIBRARIES.get(path.stem, []),
        depends=HEADERS,  # rebuilt when one changes
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for path in sorted(PACKAGE_ROOT.rglob("_*.pyx"))
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
