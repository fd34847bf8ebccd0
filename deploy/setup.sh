#!/usr/bin/env bash
# Sets up Vigil on Debian 12 (root, Python >= 3.11): system packages, .venv, Vigil itself.
#   deploy/setup.sh         what `vigil up` needs
#   deploy/setup.sh --dev   plus the test tools and the real services the tests run against
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
case "${1:-}" in
  --dev) DEV=1 ;;
  "") ;;
  *) echo "usage: deploy/setup.sh [--dev]" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python3}
"$PYTHON" - <<'PY' || { echo "Vigil needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }
import sys; sys.exit(sys.version_info < (3, 11))
PY

# Real services the integration tests start themselves: Prometheus scrapes Vigil's metrics,
# node-exporter is the reference the host collector's names are checked against;
# a single-host Slurm (deploy/slurm/start.sh) feeds the topology loader.
DEB_PACKAGES=(prometheus prometheus-node-exporter slurm-wlm munge)
if [ "$DEV" = 1 ]; then
  missing=()
  for p in "${DEB_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "==> installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
    # Debian starts services on install on some machines; the tests run their own copies.
    for unit in prometheus prometheus-node-exporter slurmctld slurmd munge; do
      $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "==> installing Vigil into .venv"
.venv/bin/python -m pip install -q --upgrade pip
if [ "$DEV" = 1 ]; then
  .venv/bin/python -m pip install -q -e ".[dev]"
else
  .venv/bin/python -m pip install -q -e .
fi
echo "==> ready: .venv/bin/vigil --help"
