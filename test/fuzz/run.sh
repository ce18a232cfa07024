#!/usr/bin/env bash
# Build the libFuzzer harnesses with clang (address and undefined-behaviour
# sanitizers) and run each for FUZZ_SECONDS (default 30).  Exits non-zero
# if a harness finds a crash; the reproducer is left in test/fuzz/out/.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${FUZZ_SECONDS:-30}
out="$here/out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
# harness:the sources under src/ it drives (+ between several)
for h in sealed:codec/sealed_codec sqlmask:codec/sqlmask jose:codec/jose fields:codec/fields hl7:codec/hl7 \
	agent:agent/scan+agent/mllp; do
	name=${h%%:*}
	srcs=()
	IFS=+ read -ra parts <<<"${h##*:}"
	for s in "${parts[@]}"; do srcs+=("$root/src/$s.c"); done
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I"$root/src" \
		-I"$(pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)" \
		"$here/fuzz_$name.c" "${srcs[@]}" -o "$work/fuzz_$name"
	mkdir -p "$work/corpus_$name"
	cp "$here/corpus/$name"/* "$work/corpus_$name/" 2>/dev/null || true
	if "$work/fuzz_$name" -max_total_time="$seconds" -max_len=4096 -artifact_prefix="$out/$name-" \
		"$work/corpus_$name" >"$work/$name.log" 2>&1; then
		echo "fuzz: ok - $name: $(grep -Eo 'Done [0-9]+ runs' "$work/$name.log" | head -1) in ${seconds}s, no crash"
	else
		tail -30 "$work/$name.log"
		echo "fuzz: NOT OK - $name crashed; reproducer in $out/"
		status=1
	fi
done
exit $status
