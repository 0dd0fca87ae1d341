# Sourced by .ci scripts: a real Prometheus server and promtool. From the PATH when there;
# otherwise Debian's `prometheus` package, fetched with `apt-get download` and unpacked into
# $HOME/.cache/integration-hub/tools (no service is installed or started), reused when present.
#   prometheus_install    sets PROMETHEUS and PROMTOOL.

prometheus_install() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    PROMETHEUS="$(command -v prometheus)" PROMTOOL="$(command -v promtool)"
  else
    local tools="${INTEGRATION_HUB_TOOLS_DIR:-$HOME/.cache/integration-hub/tools}"
    local dir="$tools/prometheus-deb"
    if [[ ! -x "$dir/usr/bin/prometheus" ]]; then
      printf '\n==> prometheus (apt-get download prometheus, unpacked into %s)\n' "$dir"
      local tmp
      tmp="$(mktemp -d)"
      chmod 755 "$tmp"  # apt's download user writes here
      (cd "$tmp" && apt-get download -qq prometheus) \
        || { apt-get update -qq && (cd "$tmp" && apt-get download -qq prometheus); } \
        || { echo "apt-get download prometheus failed" >&2; rm -rf "$tmp"; return 1; }
      mkdir -p "$tools"
      dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/unpacked" && rm -rf "$dir" \
        && mv "$tmp/unpacked" "$dir" \
        || { echo "dpkg-deb -x prometheus failed" >&2; rm -rf "$tmp"; return 1; }
      rm -rf "$tmp"
    fi
    PROMETHEUS="$dir/usr/bin/prometheus" PROMTOOL="$dir/usr/bin/promtool"
  fi
  "$PROMETHEUS" --version 2>&1 | head -1
}
