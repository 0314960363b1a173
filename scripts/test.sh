#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine, then runs it.
#   bash scripts/test.sh [pytest args]
# e.g. the fast subset while working:  bash scripts/test.sh -m "not slow and not browser"
set -euo pipefail
cd "$(dirname "$0")/.."

# The project itself, editable, with its test extras (requirements.txt and requirements-test.txt):
# the `dino-demo` command and `python -m dino_demo` then work from any directory.
python -m pip install --quiet --disable-pip-version-check -e ".[test]" -c constraints.txt

# Browser tests drive Debian's Chromium (never a downloaded browser).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "running as root: installing the Debian packages chromium and chromium-driver with apt-get (for the browser tests)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "note: /usr/bin/chromium is missing and this is not root: browser tests will be skipped" >&2
  fi
fi

# The C++ op is built ahead of the tests; the CUDA sources are compiled too wherever nvcc exists
# (for Hopper and Blackwell), so a broken .cu fails here even on machines without a GPU.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0;12.0}"
  python -m dino_demo build-ops --cuda --check
else
  python -m dino_demo build-ops --check
fi

# tests/ops/test_ops_triton.py runs the Triton kernels on CPU tensors in Triton's interpreter when no
# GPU is visible (tests/conftest.py sets TRITON_INTERPRET=1); tests marked `cuda` are skipped then.
python -m pytest -q -ra "$@"
