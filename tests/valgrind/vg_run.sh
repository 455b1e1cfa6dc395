#!/usr/bin/env bash
# vg_run.sh VALGRIND LIBEBBMALLOC MODE PROGRAM [ARGS...]
# Runs PROGRAM under memcheck with libebbmalloc preloaded.
#   MODE clean:        memcheck must report zero errors, the program exit 0
#   MODE expect-KIND:  memcheck must report the error of KIND (its message
#                      below) and nothing that is not about it
set -u
vg=$1 lib=$2 mode=$3
shift 3
log=$(mktemp)
trap 'rm -f "$log"' EXIT
opts=""
# A deliberate bug must not stop the program before memcheck has seen it.
# These programs are short: no decay thread (valgrind 3.19 asserts when a
# process exits while a thread is still being cloned).
[ "$mode" != clean ] && opts="on_error=warn,background_thread=0"
EBB_OPTIONS=$opts LD_PRELOAD=$lib "$vg" --tool=memcheck --error-exitcode=99 --leak-check=no \
  --track-origins=yes --num-callers=20 --soname-synonyms=somalloc=nouserintercepts \
  --run-libc-freeres=no --run-cxx-freeres=no "$@" >/dev/null 2>"$log"
rc=$?
errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log" | tail -1)
fail() { echo "FAIL: $*"; cat "$log"; exit 1; }
[ -n "$errors" ] || fail "no ERROR SUMMARY from memcheck"
! grep -q "^valgrind: .*Assertion" "$log" || fail "valgrind itself failed"
case $mode in
clean)
  [ "$errors" = 0 ] || fail "$errors memcheck errors, expected none"
  [ $rc = 0 ] || fail "exit code $rc"
  ;;
expect-*)
  kind=${mode#expect-}
  case $kind in
  uaf) want="Invalid write of size 8|Address 0x[0-9a-f]+ is 64 bytes inside a block of size 256 free'd" ;;
  overflow) want="Invalid write of size 1|Address 0x[0-9a-f]+ is 0 bytes after a block of size 100 alloc'd" ;;
  uninit) want="Conditional jump or move depends on uninitialised value|Uninitialised value was created by a heap allocation" ;;
  double_free) want="Invalid free\(\) / delete / delete\[\] / realloc\(\)|Address 0x[0-9a-f]+ is 0 bytes inside a block of size 48 free'd" ;;
  *) fail "unknown kind $kind" ;;
  esac
  IFS='|' read -r -a lines <<<"$want"
  for l in "${lines[@]}"; do
    grep -Eq "$l" "$log" || fail "memcheck did not say: $l"
  done
  [ "$errors" -ge 1 ] || fail "no error reported"
  [ $rc = 99 ] || fail "exit code $rc, expected memcheck's 99"
  ;;
*) fail "bad mode $mode" ;;
esac
echo "ok: $mode, memcheck errors: $errors"
