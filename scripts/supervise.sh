#!/usr/bin/env bash
# scripts/supervise.sh NAME COMMAND [ARG...]: run COMMAND for ever, its lines prefixed with NAME.
# When it exits, say so and start it again after 1 s, doubling to 30 s while it keeps exiting within a
# minute of its start. scripts/run-local.sh starts one of these per service, each in its own process
# group, and ends the groups on Ctrl-C; killing the group ends the supervisor with its command.
set -uo pipefail
label=$(printf "%-9s" "$1"); shift
delay=1
while :; do
  started=$SECONDS
  "$@" 2>&1 | sed -u "s/^/$label| /"
  status=${PIPESTATUS[0]}
  if [ $((SECONDS - started)) -ge 60 ]; then delay=1; fi
  echo "$label| exited with status $status; restarting in ${delay} s (the other processes go on)"
  sleep "$delay"
  delay=$((delay * 2 > 30 ? 30 : delay * 2))
done
