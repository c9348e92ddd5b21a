#!/usr/bin/env bash
# The demo: installs Shipyard, makes a busybox base image from Debian's busybox-static,
# builds a multi-stage example whose three middle stages run at the same time, then
# rebuilds it to show cache hits — all without any image registry.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
SY="$(pwd)/.venv/bin/shipyard"
export SHIPYARD_ROOT=${SHIPYARD_ROOT:-/var/lib/shipyard}
WORK=$(mktemp -d /tmp/shipyard-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. A base image from Debian's busybox-static (shipyard import)"
.venv/bin/python scripts/busybox_rootfs.py "$WORK/rootfs"
"$SY" import "$WORK/rootfs" -t busybox:local
cp -r examples/parallel "$WORK/app"

step "2. Cold build (--no-cache): the frontend, backend and docs stages run in parallel (~1 s, not ~3 s)"
"$SY" build --no-cache -t demo:latest "$WORK/app"

step "3. Rebuild with nothing changed: every step is CACHED"
"$SY" build -t demo:latest "$WORK/app"

step "4. Edit a file that no COPY reads (NOTES.txt): still a full cache hit"
echo "edited" >> "$WORK/app/NOTES.txt"
"$SY" build -t demo:latest "$WORK/app"

step "5. Edit docs/README.md: only the docs stage and the steps after it rerun"
echo "a third line" >> "$WORK/app/docs/README.md"
"$SY" build -t demo:latest --metadata-file "$WORK/meta.json" "$WORK/app"
.venv/bin/python - "$WORK/meta.json" <<'PY'
import json, sys
for step in json.load(open(sys.argv[1]))["shipyard.steps"]:
    print(f"  {'CACHED  ' if step['cached'] else 'RAN     '} {step['duration_s']:6.2f}s  {step['name']}")
PY

step "6. The image's files, exported with --output type=local"
"$SY" build --progress quiet --output "type=local,dest=$WORK/out" "$WORK/app" >/dev/null
cat "$WORK/out/app/frontend.txt" "$WORK/out/app/backend.txt" "$WORK/out/app/docs.txt"
"$SY" images
