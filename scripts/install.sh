#!/usr/bin/env bash
# Installs what Shipyard needs on Debian 12 (as root): the OCI runtime, the tools the tests
# compare against, and a virtualenv with the package. Idempotent; safe to run again.
# uidmap (newuidmap/newgidmap) lets rootless users map their /etc/subuid ranges.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS="runc busybox-static skopeo umoci ca-certificates python3-venv docker-registry openssl git openssh-client slirp4netns uidmap"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "[install] apt-get install$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || true
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'
# Start-up is part of every build: make sure compiled bytecode exists even where
# PYTHONDONTWRITEBYTECODE is set (imports then never compile from source).
.venv/bin/python -m compileall -q engine frontends cache >/dev/null
echo "[install] shipyard: $(pwd)/.venv/bin/shipyard" >&2
