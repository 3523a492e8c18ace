#!/usr/bin/env bash
# Run the whole test suite: lint, then every test tier on SQLite and PostgreSQL, UI tests in Chromium.
# Installs what it needs (a .venv, Debian's chromium when run as root). Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ensure_venv requirements-dev.txt || exit 1

# The browser tests drive Debian's Chromium; install it when we can (root with apt).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's chromium for the browser tests ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "warning: could not install chromium; browser tests will fail under CI and skip otherwise" >&2
fi

# The PostgreSQL tests need the server on 127.0.0.1:5432; start the local cluster if it is down.
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    fi
fi

echo "== ruff"
.venv/bin/ruff check . || exit 1
.venv/bin/ruff format --check . || exit 1

echo "== pytest"
# Two worker processes by default (ML_CONNECTOR_TEST_WORKERS=0 for one): the suite waits on loopback servers
# more than it computes. Each test file stays on one worker, in order (module-scoped stacks, and the
# fuzzing summary test reads what its file's property tests saw).
workers="${ML_CONNECTOR_TEST_WORKERS:-2}"
if [ "$workers" = "0" ]; then
    .venv/bin/python -m pytest "$@"
else
    .venv/bin/python -m pytest -n "$workers" --dist loadfile "$@"
fi
status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure, not a pass." >&2
    exit 1
fi
exit "$status"
