#!/usr/bin/env bash
# The image's install steps, shared by the Dockerfile and tests/test_deploy.py so the two cannot drift.
#
#   install.sh deps    VENV LOCK   create VENV (if missing) and install the pinned runtime closure
#   install.sh package VENV SRC    build ftlcloud's wheel from SRC and install it without resolving
#                                  anything, then `pip check` that the lock satisfies the package
#
# Two phases so the Docker layer with the ~100 pinned dependencies is cached across code changes.
set -euo pipefail

usage() { echo "usage: $0 deps VENV LOCK | package VENV SRC" >&2; exit 2; }
[ $# -eq 3 ] || usage
phase=$1 venv=$2 arg=$3
python=${PYTHON:-python3}

# No cache: the image keeps no pip cache, and the test must not reuse one it did not create.
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

case "$phase" in
deps)
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    # --no-deps: the lock is the complete closure; anything missing is caught by `pip check` below
    # instead of being resolved silently to an unpinned version.
    # Wheels only (no compilers in the image), except pure-Python packages PyPI has as sdists only
    # (pypgstac needs version-parser).
    "$venv/bin/pip" install --no-deps --only-binary=:all: --no-binary=version-parser \
        --requirement "$arg"
    ;;
package)
    [ -x "$venv/bin/python" ] || { echo "$venv is not a venv: run the deps phase first" >&2; exit 1; }
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    "$venv/bin/pip" wheel --no-deps --wheel-dir "$wheels" "$arg"
    "$venv/bin/pip" install --no-deps "$wheels"/ftlcloud-*.whl
    # Fails if pyproject.toml gained a dependency (or a bound) the lock does not satisfy.
    "$venv/bin/pip" check
    ;;
*)
    usage
    ;;
esac
