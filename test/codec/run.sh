#!/usr/bin/env bash
# The pure-C codecs (src/codec) checked without a server: builds each
# test/codec/*_test.c with the sanitizers against its codec and runs it on
# the public samples in test/samples.  Prints "codec: ok - ..." per check;
# exits non-zero if a check failed or a program did not build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc=${CC:-cc}
command -v clang >/dev/null && cc=clang
"$cc" -std=c99 -Wall -Wextra -Werror -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all \
	-I"$root/src" "$here/hl7_test.c" "$root/src/codec/hl7.c" -o "$work/hl7_test"
"$work/hl7_test" "$root/test/samples/hl7v2"
