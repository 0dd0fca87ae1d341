# Sourced by .ci scripts: the Python client's venv (clients/python/requirements.txt, pinned,
# from PyPI), cached under $HOME/.cache/integration-hub/tools and reused when present.
#   py_client_venv    makes or updates it; sets PY_CLIENT_PYTHON to its python.

py_client_venv() {
  local tools="${INTEGRATION_HUB_TOOLS_DIR:-$HOME/.cache/integration-hub/tools}"
  local venv="$tools/py-client-venv"
  printf '\n==> Python client venv (%s)\n' "$venv"
  mkdir -p "$tools"
  if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv" || { echo "python3 -m venv failed (install python3-venv)" >&2; return 1; }
  fi
  # Quiet, and cheap when everything is already at the pinned versions.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r clients/python/requirements.txt \
    || { echo "pip install -r clients/python/requirements.txt failed" >&2; return 1; }
  PY_CLIENT_PYTHON="$venv/bin/python"
}
