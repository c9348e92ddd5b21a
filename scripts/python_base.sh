#!/usr/bin/env bash
# Makes a `python:3.11-slim` stand-in from Debian packages (Docker Hub is out of reach):
# debootstrap --variant=minbase bookworm + python3 + pip, with `python` on PATH and pip
# allowed to install system-wide (as in the official image). Cached: the root
# filesystem is made once per machine in $PYTHON_BASE_CACHE.
# Usage: scripts/python_base.sh DEST_ROOTFS_DIR   (copies the cached tree there)
set -euo pipefail
DEST=${1:?usage: python_base.sh DEST_ROOTFS_DIR}
CACHE=${PYTHON_BASE_CACHE:-/var/cache/shipyard/python-3.11-slim-rootfs}
MIRROR=${DEBIAN_MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
if [ ! -x "$CACHE/usr/bin/python3" ] || [ ! -e "$CACHE/.complete" ]; then
  rm -rf "$CACHE.tmp"
  mkdir -p "$(dirname "$CACHE")"
  echo "[python-base] debootstrap bookworm (minbase + python3) from $MIRROR" >&2
  debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
    bookworm "$CACHE.tmp" "$MIRROR" >"$(dirname "$CACHE")/debootstrap.log" 2>&1 ||
    { echo "[python-base] debootstrap failed; see $(dirname "$CACHE")/debootstrap.log" >&2; exit 1; }
  rm -f "$CACHE.tmp"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$CACHE.tmp"/var/cache/apt/archives/*.deb "$CACHE.tmp"/var/lib/apt/lists/*
  touch "$CACHE.tmp/.complete"
  rm -rf "$CACHE"
  mv "$CACHE.tmp" "$CACHE"
fi
mkdir -p "$DEST"
cp -a "$CACHE"/. "$DEST"/
rm -f "$DEST/.complete"
