#!/usr/bin/env bash
# Starts the outside systems the test suite checks Shipyard against: a docker daemon
# (docker 20.10 from Debian, for `docker load`/`docker run` of images Shipyard writes).
# Idempotent; installs what is missing. Logs go to $SERVICES_DIR (default /tmp/shipyard-services).
set -euo pipefail
DIR=${SERVICES_DIR:-/tmp/shipyard-services}
DOCKER=/usr/bin/docker
mkdir -p "$DIR"

need=""
for p in docker.io containerd; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' || need="$need $p"
done
if [ -n "$need" ]; then
  echo "[services] apt-get install$need" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
fi

start_dockerd() {
  nohup dockerd "$@" >"$DIR/dockerd.log" 2>&1 &
  echo $! >"$DIR/dockerd.pid"
  for _ in $(seq 60); do
    "$DOCKER" info >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$DIR/dockerd.pid")" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
if ! "$DOCKER" info >/dev/null 2>&1; then
  echo "[services] starting dockerd" >&2
  start_dockerd --storage-driver=overlay2 ||
    start_dockerd --storage-driver=overlay2 --iptables=false --bridge=none ||
    start_dockerd --storage-driver=vfs --iptables=false --bridge=none ||
    { echo "[services] dockerd would not start; see $DIR/dockerd.log" >&2; exit 1; }
fi
echo "[services] docker $("$DOCKER" version --format '{{.Server.Version}}') ready" >&2
