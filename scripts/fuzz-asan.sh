#!/usr/bin/env bash
# Builds an AddressSanitizer copy of the extensions and runs the fast-path, QUIC, table and worker
# tests and fuzzers against it: heap over-reads/over-writes in the reassembly buffers and tables
# abort the run with an ASan report. Usage: scripts/fuzz-asan.sh [extra pytest args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
out=$root/build/asan
rm -rf "$out"
mkdir -p "$out/lib"
cp -r "$root/src/edufilter" "$out/lib/"
find "$out/lib/edufilter" \( -name "*.so" -o -name "_*.c" \) -delete
(cd "$root" && EDUFILTER_SANITIZE=address "$python" setup.py -q build_ext \
    --build-lib "$out/lib" --build-temp "$out/tmp" >"$out/build.log" 2>&1) \
    || { cat "$out/build.log"; exit 1; }
asan_runtime=$(gcc -print-file-name=libasan.so)
cd "$root"
# detect_leaks=0: CPython itself keeps allocations alive at exit by design.
LD_PRELOAD=$asan_runtime ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 PYTHONMALLOC=malloc \
    PYTHONPATH=$out/lib "$python" -m pytest -q -p no:cacheprovider \
    tests/test_fastpath.py tests/test_fastpath_fuzz.py tests/test_fastpath_differential.py tests/classify/test_classify.py \
    tests/enforce/test_enforce.py tests/decode/test_quic.py tests/enforce/test_enforce_quic.py "$@"
