#!/usr/bin/env bash
# Verify the systemd units offline: `systemd-analyze verify` must print nothing, and
# `systemd-analyze security` must rate both services at or below MAX_EXPOSURE (tenths).
# The units name /usr/bin/learner-sync; verify checks that ExecStart is executable,
# so they are checked inside a throwaway root holding a stub there, never on the host.
set -euo pipefail
cd "$(dirname "$0")"
# In tenths, as systemd-analyze counts: 20 = an exposure of 2.0 ("OK").
MAX_EXPOSURE="${MAX_EXPOSURE:-20}"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
printf '#!/bin/sh\nexit 0\n' > "$root/usr/bin/learner-sync"
chmod +x "$root/usr/bin/learner-sync"
cp learner-sync.service learner-sync-oneshot.service learner-sync.timer "$root/etc/systemd/system/"

status=0
for unit in learner-sync.service learner-sync-oneshot.service learner-sync.timer; do
    out="$(systemd-analyze verify --root="$root" "$unit" 2>&1)" || status=1
    if [ -n "$out" ]; then
        echo "systemd-analyze verify $unit:"
        echo "$out"
        status=1
    else
        echo "systemd-analyze verify $unit: ok"
    fi
done
for unit in learner-sync.service learner-sync-oneshot.service; do
    if ! systemd-analyze security --offline=yes --root="$root" --threshold="$MAX_EXPOSURE" "$unit" > "$root/security.txt" 2>&1; then
        cat "$root/security.txt"
        echo "systemd-analyze security $unit: exposure above $MAX_EXPOSURE"
        status=1
    fi
    grep "Overall exposure level" "$root/security.txt" || true
done
exit "$status"
