#!/usr/bin/env bash
# memarch set-up and entry points.
#   bash run.sh demo [args]  create/update .venv, install memarch, run the MQAR demo on CPU
#   bash run.sh test [args]  create/update .venv (with dev extras), run the whole test suite
# Python >= 3.12 is found from $PYTHON, then PATH (python3.12, python3.13, python3), then pyenv
# (lowest version >= 3.12 first: constraints.txt was resolved on 3.12).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${MEMARCH_VENV:-.venv}"

is_ok_python() {  # $1: a command; true when it runs and is Python >= 3.12
  "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local c
  if [ -n "${PYTHON:-}" ]; then
    if is_ok_python "$PYTHON"; then echo "$PYTHON"; return 0; fi
    echo "run.sh: \$PYTHON=$PYTHON is not a working Python >= 3.12" >&2; return 1
  fi
  for c in python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null 2>&1 && is_ok_python "$c"; then command -v "$c"; return 0; fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    local root; root="$(pyenv root)"
    for c in $(ls -d "$root"/versions/3.1[2-9]* "$root"/versions/3.[2-9][0-9]* 2>/dev/null | sort -V); do
      for exe in "$c"/bin/python3.*[0-9] "$c"/bin/python3; do
        if [ -x "$exe" ] && is_ok_python "$exe"; then echo "$exe"; return 0; fi
      done
    done
  fi
  echo "run.sh: no Python >= 3.12 found (tried \$PYTHON, python3.12, python3.13, python3 on PATH, pyenv)." >&2
  echo "run.sh: install Python 3.12+ or point \$PYTHON at one, e.g. PYTHON=/usr/bin/python3.12 bash run.sh test" >&2
  return 1
}

ensure_venv() {  # $1: extras spec ("" or "[dev]")
  local extras="$1" stamp="$VENV/.memarch-installed" want
  if [ ! -x "$VENV/bin/python" ] || ! is_ok_python "$VENV/bin/python"; then
    local py; py="$(find_python)"
    echo "run.sh: creating $VENV with $py"
    rm -rf "$VENV"
    "$py" -m venv "$VENV"
  fi
  want="$(cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)$extras"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "run.sh: installing memarch$extras into $VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".$extras"
    echo "$want" > "$stamp"
  fi
}

# JAX on the CPU unless the caller chose (JAX_PLATFORMS=cuda/tpu, or "" to let JAX probe):
# with libtpu installed (dev extra) JAX would otherwise probe for a TPU at start-up.
export JAX_PLATFORMS="${JAX_PLATFORMS-cpu}"

cmd="${1:-demo}"; shift || true
case "$cmd" in
  demo)
    ensure_venv "[dev]"
    exec "$VENV/bin/memarch" demo "$@" ;;
  test)
    ensure_venv "[dev]"
    # worksteal: an idle worker takes queued tests from the busy one (no long tail at the end)
    exec "$VENV/bin/python" -m pytest -n 2 --dist worksteal -q "$@" ;;
  *)
    echo "usage: bash run.sh {demo|test} [args...]" >&2; exit 2 ;;
esac
