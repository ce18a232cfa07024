#!/usr/bin/env bash
# The HL7 v2 parser alone (issue #14: at least 200 MB/s), over the public
# SIU samples in test/samples/hl7v2, built with -O2 as the extension is.
# No server.  Prints figures; never part of CI.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -I"$root/src" "$here/hl7_parse.c" "$root/src/codec/hl7.c" -o "$work/hl7_parse"
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$work/hl7_parse" "$root"/test/samples/hl7v2/0*.hl7
