#!/usr/bin/env bash
# scripts/await-fcm.sh FILE LOG OFFSET [SECONDS]: wait until the FCM emulator has written its service-account
# FILE. scripts/run-local.sh starts the emulator under the supervisor with its output appended to LOG (OFFSET:
# LOG's size before it started); when the emulator cannot listen it says why in one line there
# ("companion fcm-emulator: 127.0.0.1:9099 is in use ...") and exits, and the supervisor would start it again
# for ever while the worker and the sender wait on a file that never comes. Instead this shows that line and
# fails, and `make run` stops.
set -uo pipefail
file=$1 log=$2 offset=$3 seconds=${4:-30}
for _ in $(seq 1 $((seconds * 10))); do
  [ -f "$file" ] && exit 0
  said=$(tail -c +"$((offset + 1))" "$log" 2>/dev/null | grep -m1 '^companion fcm-emulator: ')
  if [ -n "$said" ]; then
    echo "$said" >&2
    exit 1
  fi
  sleep 0.1
done
echo "companion fcm-emulator: no service-account file at $file after ${seconds} s (see $log)" >&2
exit 1
