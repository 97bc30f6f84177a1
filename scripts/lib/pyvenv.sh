#!/usr/bin/env bash
# Makes (once) the project's own Python virtual environment for the
# contract tools, never touching the system Python, and prints its path.
#
#   venv="$(scripts/lib/pyvenv.sh)" && "$venv/bin/openapi-spec-validator" doc.json
#
# COREBANK_VENV overrides the location (default ~/.cache/corebank/venv).
# Exits non-zero with a message on stderr when Python, venv or pip fail.
set -euo pipefail

venv="${COREBANK_VENV:-${HOME:-/tmp}/.cache/corebank/venv}"
packages=(openapi-spec-validator schemathesis)

fail() {
    echo "pyvenv: $*" >&2
    exit 1
}

command -v python3 >/dev/null 2>&1 || fail "python3 is not installed (Debian: apt-get install python3 python3-venv)"

# One process at a time makes and fills the environment; others wait for it
# (a second test seeing bin/python while the first is still installing pip
# into it failed with "No module named pip").
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

# A half-made environment (no pip: an interrupted creation) is made again.
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 \
        || fail "cannot create a virtual environment at $venv (Debian: apt-get install python3-venv)"
fi

missing=()
for package in "${packages[@]}"; do
    "$venv/bin/python" -m pip show --quiet "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]} > 0)); then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}" >&2 \
        || fail "pip could not install ${missing[*]} into $venv"
fi

for tool in openapi-spec-validator schemathesis; do
    [[ -x "$venv/bin/$tool" ]] || fail "$tool missing from $venv/bin after install"
done
echo "$venv"
