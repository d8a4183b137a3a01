#!/usr/bin/env bash
# Starts hyperd in the background unless one already answers on its socket (for `make run` on
# machines without systemd; with systemd, use contrib/systemd/hyperd.service instead).
set -euo pipefail
cd "$(dirname "$0")/.."
if .venv/bin/hyper version >/dev/null 2>&1; then
  exit 0
fi
mkdir -p /var/log
nohup .venv/bin/hyperd >>/var/log/hyperd.log 2>&1 </dev/null &
for _ in $(seq 1 100); do
  if .venv/bin/hyper version >/dev/null 2>&1; then
    echo "hyperd: started (log: /var/log/hyperd.log)"
    exit 0
  fi
  sleep 0.1
done
echo "hyperd did not come up; see /var/log/hyperd.log" >&2
tail -20 /var/log/hyperd.log >&2
exit 1
