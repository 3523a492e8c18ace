#!/usr/bin/env bash
# Start the whole product in demo mode: the app, the runner, and the built-in NetSuite, Zuora and Zoho CRM
# emulators with demo data, on an embedded SQLite database under ./data. Installs what it needs into .venv.
# Options (ports) go to `python -m demo`; see `./start.sh --help`.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
ensure_venv requirements.txt
exec .venv/bin/python -m demo "$@"
