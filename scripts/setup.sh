#!/usr/bin/env bash
# Set up detbal on a fresh Debian machine with Python >= 3.11: system build tools
# (llama-cpp-python compiles from source, ~8 minutes the first time; pip's wheel
# cache makes later installs quick), then the package with every extra used by
# the demo and the tests.  Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v g++ >/dev/null 2>&1 || need_apt+=(build-essential)
command -v git >/dev/null 2>&1 || need_apt+=(git)
# the dictionary of the word task's constrained decoding (/usr/share/dict/american-english)
[ -f /usr/share/dict/american-english ] || need_apt+=(wamerican)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

PYTHON="${PYTHON:-python3}"
# portable llama.cpp build (no -march=native), so the wheel cache works on any x86-64 machine
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
"$PYTHON" -m pip install -q -e ".[agents,evo,dev]"
# pyenv only links new console scripts after a rehash
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
# compile detbal's numba code once now (about 45 s) instead of in the user's first
# `detbal analyze`: a tiny analysis runs every compiled path and numba caches the
# machine code on disk (cache=True; in the checkout's __pycache__ for this editable
# install), so later processes load it in well under a second
warm="$(mktemp -d)"
"$PYTHON" -m detbal -q synth --out "$warm/chain.csv" --states 40 --transitions 4000 >/dev/null
"$PYTHON" -m detbal -q analyze "$warm/chain.csv" --out "$warm/out" --bootstrap 2 \
    --test-simulations 2 --no-figures >/dev/null
rm -rf "$warm"
"$PYTHON" -c "import detbal, numba, llama_cpp, openai, deap, deeptime; print('detbal', detbal.__version__, 'ready')"
