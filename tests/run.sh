#!/usr/bin/env bash
# The whole test suite on a fresh machine: the system packages the tests
# drive (installed with apt-get when run as root, else named in one line),
# the virtualenv with the package and its test extras, then trial.
# Arguments, if any, name the test modules to run instead of all of them.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
# a throwaway cluster is started from these binaries (tests/pgcluster.py)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "tests/run.sh: the tests need these system packages: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

python3 -m venv .venv
# --use-pep517: pip honours editable_mode=compat (which keeps the twistd plugin visible) also
# when the venv already holds a newer setuptools
.venv/bin/pip install -q --disable-pip-version-check --use-pep517 -e '.[test]' --config-settings editable_mode=compat
if [ $# -eq 0 ]; then
    set -- tests
fi
exec .venv/bin/python -m twisted.trial "$@"
