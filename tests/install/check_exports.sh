#!/usr/bin/env bash
# check_exports.sh LIB HEADER OVERRIDE(0|1) [NM]
# Fails if the shared library exports anything but the API: the ebb_*
# functions, and with the override the malloc family, glibc's __libc_* names
# and the C++ operators new/delete. Also fails if any of those is missing, or
# if the standard names carry a symbol version: a versioned malloc would not
# interpose on programs whose references say malloc@GLIBC_2.2.5, so
# LD_PRELOAD would silently do nothing (core/api/exports.map is an anonymous,
# visibility-only version script for that reason).
set -u
lib=$1 header=$2 override=$3 nm=${4:-nm}
fail=0
syms=$("$nm" -D --defined-only "$lib" | awk '$2 ~ /^[TtWiVvDdBbRr]$/ {print $3}') ||
  { echo "nm failed on $lib"; exit 1; }
[ -n "$syms" ] || { echo "no symbols exported by $lib?"; exit 1; }

std="malloc free calloc realloc reallocarray posix_memalign aligned_alloc memalign valloc pvalloc
malloc_usable_size malloc_trim cfree free_sized free_aligned_sized mallinfo mallinfo2 malloc_stats malloc_info mallopt
__libc_malloc __libc_free __libc_calloc __libc_realloc __libc_memalign __libc_valloc __libc_pvalloc"
ops="_Znwm _Znam _ZnwmRKSt9nothrow_t _ZnamRKSt9nothrow_t _ZnwmSt11align_val_t _ZnamSt11align_val_t
_ZnwmSt11align_val_tRKSt9nothrow_t _ZnamSt11align_val_tRKSt9nothrow_t
_ZdlPv _ZdaPv _ZdlPvRKSt9nothrow_t _ZdaPvRKSt9nothrow_t _ZdlPvm _ZdaPvm _ZdlPvSt11align_val_t
_ZdaPvSt11align_val_t _ZdlPvSt11align_val_tRKSt9nothrow_t _ZdaPvSt11align_val_tRKSt9nothrow_t
_ZdlPvmSt11align_val_t _ZdaPvmSt11align_val_t"

allowed() {
  local s=$1
  [[ $s =~ ^ebb_[a-z0-9_]+$ ]] && return 0
  [ "$override" = 1 ] || return 1
  for w in $std $ops; do [ "$s" = "$w" ] && return 0; done
  return 1
}

n=0
while read -r s; do
  [ -z "$s" ] && continue
  n=$((n + 1))
  if [[ $s == *@* ]]; then
    echo "versioned export: $s"; fail=1; continue
  fi
  allowed "$s" || { echo "exported but not API: $s"; fail=1; }
done <<<"$syms"

# Every function the header declares with EBB_API.
api=$(grep -oE '^EBB_API[^(]*[^a-z0-9_]ebb_[a-z0-9_]+\(' "$header" | grep -oE 'ebb_[a-z0-9_]+\($' | tr -d '(')
[ -n "$api" ] || { echo "no EBB_API functions found in $header"; exit 1; }
need=$api
[ "$override" = 1 ] && need="$need $std $ops"
for w in $need; do
  grep -qxF "$w" <<<"$syms" || { echo "missing export: $w"; fail=1; }
done

if [ $fail = 0 ]; then
  echo "check_exports: ok, $n symbols exported by $(basename "$lib"), all API ($(wc -w <<<"$api") ebb_* in the header)"
fi
exit $fail
