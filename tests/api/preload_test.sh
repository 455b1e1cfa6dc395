#!/bin/bash
# preload_test.sh LIB MODE [ARGS...]: runs a real program without and with
# LD_PRELOAD=LIB and fails if the preloaded run fails or its output differs.
#
#   preload_test.sh LIB python PYTHON WORKLOAD.py   the threaded Python workload
#   preload_test.sh LIB sort                         sort of a ~50 MB generated file
#   preload_test.sh LIB gcc CC SRCDIR CKDIR          gcc -O2 -c of SRCDIR/core/**/*.c (the
#                                                    first 6 by name, to keep it short)
#
# Exit status 77 (ctest SKIP_RETURN_CODE) when a tool is missing.
set -u -o pipefail

lib=$1
mode=$2
shift 2
work=$(mktemp -d "${TMPDIR:-/tmp}/ebb-preload.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
	echo "preload_test($mode): FAIL: $*" >&2
	exit 1
}
skip() {
	echo "preload_test($mode): SKIP: $*"
	exit 77
}

[ -f "$lib" ] || fail "no library at $lib"

# The dynamic loader only warns about a library it cannot preload and runs the
# program anyway, which would make every comparison pass: check it is loaded.
maps=$(LD_PRELOAD="$lib" cat /proc/self/maps 2>"$work/maps.err") || fail "cat /proc/self/maps failed preloaded: $(cat "$work/maps.err")"
grep -qF "$(basename "$lib")" <<<"$maps" || fail "$lib is not mapped in a preloaded process: $(cat "$work/maps.err")"

# run NAME CMD...: runs CMD plain and preloaded; stdout to $work/NAME.plain and
# $work/NAME.preload; fails if the preloaded run fails, warns about the
# library, or prints something else.
run() {
	local name=$1
	shift
	"$@" >"$work/$name.plain" 2>"$work/$name.plain.err" || {
		cat "$work/$name.plain.err" >&2
		skip "'$*' fails without the library"
	}
	LD_PRELOAD="$lib" "$@" >"$work/$name.preload" 2>"$work/$name.preload.err"
	local rc=$?
	if [ $rc -ne 0 ]; then
		tail -n 30 "$work/$name.preload.err" >&2
		fail "'$*' exited with status $rc under LD_PRELOAD"
	fi
	if grep -q "cannot be preloaded" "$work/$name.preload.err"; then
		cat "$work/$name.preload.err" >&2
		fail "the loader refused $lib"
	fi
	if ! cmp -s "$work/$name.plain" "$work/$name.preload"; then
		diff "$work/$name.plain" "$work/$name.preload" | head -n 20 >&2
		fail "'$*' printed something else under LD_PRELOAD"
	fi
	echo "ok: $name ($(wc -c <"$work/$name.plain") bytes of identical output)"
}

case $mode in
python)
	python=$1
	script=$2
	command -v "$python" >/dev/null 2>&1 || skip "no python3"
	export PYTHONHASHSEED=0
	run python "$python" "$script" 40000
	cat "$work/python.preload"
	;;
sort)
	command -v sort >/dev/null 2>&1 || skip "no sort"
	command -v awk >/dev/null 2>&1 || skip "no awk"
	# ~50 MB of pseudo-random lines: hex key, number, word
	awk -v n=1300000 'BEGIN {
		x = 12345; y = 678;
		w = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
		for (i = 0; i < n; i++) {
			x = (x * 1103515 + 12345) % 2147483648;
			y = (y * 69069 + 1) % 4294967296;
			printf "%08x %d %s-%d\n", x, y % 100000, substr(w, 1 + x % 40, 5 + y % 20), i;
		}
	}' >"$work/input.txt" || fail "could not generate the input"
	echo "input: $(wc -c <"$work/input.txt") bytes, $(wc -l <"$work/input.txt") lines"
	export LC_ALL=C
	# in memory, one big buffer
	run sort-memory sort -k2,2n -k1,1 "$work/input.txt"
	# small buffer: temporary files and a multi-way merge, two threads
	mkdir -p "$work/tmp"
	run sort-merge sort -S 4M --parallel=2 -T "$work/tmp" -r -u "$work/input.txt"
	;;
gcc)
	cc=$1
	src=$2
	ck=$3
	command -v "$cc" >/dev/null 2>&1 || skip "no compiler $cc"
	mkdir -p "$work/plain" "$work/preload"
	compiled=0
	# core/ is split into module folders (core/blocks, core/pages, ...):
	# the first six C files found under it, in a stable order.
	mapfile -t files < <(find "$src/core" -name '*.c' | LC_ALL=C sort)
	for f in "${files[@]:0:6}"; do
		[ -f "$f" ] || continue
		o=$(basename "$f" .c).o
		flags=(-O2 -c -std=gnu11 -fPIC -DEBB_OVERRIDE=1 -I"$src/include" -I"$src" -I"$ck")
		if ! "$cc" "${flags[@]}" "$f" -o "$work/plain/$o" 2>"$work/plain.err"; then
			echo "note: $f does not compile without the library either; left out"
			continue
		fi
		LD_PRELOAD="$lib" "$cc" "${flags[@]}" "$f" -o "$work/preload/$o" 2>"$work/preload.err"
		rc=$?
		[ $rc -eq 0 ] || { cat "$work/preload.err" >&2; fail "$cc -O2 -c $f exited with status $rc under LD_PRELOAD"; }
		if grep -q "cannot be preloaded" "$work/preload.err"; then fail "the loader refused $lib"; fi
		if ! cmp -s "$work/plain.err" "$work/preload.err"; then
			diff "$work/plain.err" "$work/preload.err" | head -n 20 >&2
			fail "$cc printed other diagnostics for $f under LD_PRELOAD"
		fi
		if ! cmp -s "$work/plain/$o" "$work/preload/$o"; then
			diff <(nm "$work/plain/$o") <(nm "$work/preload/$o") | head -n 20 >&2
			fail "$o differs when compiled under LD_PRELOAD"
		fi
		compiled=$((compiled + 1))
	done
	[ $compiled -gt 0 ] || skip "no C file under $src/core compiles"
	echo "ok: $compiled object files identical"
	;;
*)
	fail "unknown mode"
	;;
esac
