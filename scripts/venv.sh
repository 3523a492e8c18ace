# Sourced by start.sh and test.sh: make ./.venv and install a requirements file into it, once per change.
# Usage: ensure_venv requirements.txt
ensure_venv() {
    local requirements="$1"
    local python="${PYTHON:-python3}"
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "ml-connector needs Python 3.11 or newer as '$python' (set PYTHON=/path/to/python3.11)." >&2
        return 1
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "Creating the virtual environment in .venv ..."
        "$python" -m venv .venv || return 1
    fi
    # Reinstall only when the requirements changed since the last successful install.
    local stamp=".venv/.installed-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$requirements")"
    if [ ! -f "$stamp" ]; then
        echo "Installing $requirements into .venv ..."
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements" || return 1
        touch "$stamp"
    fi
}
