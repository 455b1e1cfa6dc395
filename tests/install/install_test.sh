#!/usr/bin/env bash
# install_test.sh CMAKE BUILD_DIR CONSUMER_SRC CC CXX VERSION
# Installs the build to a temporary prefix and checks the installed copy the
# way users consume it:
#   files       libebbmalloc.so.V (SONAME libebbmalloc.so.MAJOR.MINOR while
#               0.x) with its links, libebbmalloc.a, ebbmalloc.h, the CMake
#               package and ebbmalloc.pc
#   CMake       a C++ project with find_package(ebbmalloc), linked with
#               ebbmalloc::ebbmalloc and ebbmalloc::ebbmalloc_static
#   pkg-config  a C program compiled with a plain command line, shared and
#               static (-Wl,-Bstatic $(pkg-config --static --libs ebbmalloc))
#   relocation  the prefix moved elsewhere still works with pkg-config
# Each program checks that malloc (and new) really are ebbmalloc's
# (consumer.h). Skips (77) if pkg-config is not installed.
set -u
cmake=$1 build=$2 consumer=$3 cc=$4 cxx=$5 version=$6
command -v pkg-config >/dev/null || { echo "pkg-config not installed (Debian: pkgconf)"; exit 77; }
work=$(mktemp -d "${TMPDIR:-/tmp}/ebb-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "install_test: FAIL: $*"; exit 1; }
step() { echo "== $*"; }

prefix=$work/prefix
step "cmake --install $build --prefix $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "install"; }

pc=$(find "$prefix" -name ebbmalloc.pc)
[ -n "$pc" ] || fail "no ebbmalloc.pc installed"
libdir=$(dirname "$(dirname "$pc")")
major=${version%%.*} rest=${version#*.} minor=${rest%%.*}
if [ "$major" = 0 ]; then soversion=$major.$minor; else soversion=$major; fi
for f in "$libdir/libebbmalloc.so.$version" "$libdir/libebbmalloc.so.$soversion" "$libdir/libebbmalloc.so" \
         "$libdir/libebbmalloc.a" "$prefix/include/ebbmalloc.h" \
         "$libdir/cmake/ebbmalloc/ebbmalloc-config.cmake" "$libdir/cmake/ebbmalloc/ebbmalloc-config-version.cmake" \
         "$libdir/cmake/ebbmalloc/ebbmalloc-targets.cmake"; do
  [ -e "$f" ] || fail "not installed: ${f#$prefix/}"
done
soname=$(objdump -p "$libdir/libebbmalloc.so.$version" | awk '$1 == "SONAME" {print $2}')
[ "$soname" = "libebbmalloc.so.$soversion" ] || fail "SONAME is '$soname', expected libebbmalloc.so.$soversion"
echo "installed: $(cd "$prefix" && find . -type f -o -type l | sort | tr '\n' ' ')"
echo "SONAME $soname"

# ---- CMake: find_package --------------------------------------------------
step "find_package(ebbmalloc) consumer"
"$cmake" -S "$consumer" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" >"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log"; fail "consumer configure"; }
"$cmake" --build "$work/cmake-build" -j2 >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "consumer build"; }
for exe in consumer_shared consumer_static; do
  "$work/cmake-build/$exe" || fail "$exe"
done
needed=$(objdump -p "$work/cmake-build/consumer_shared" | awk '$1 == "NEEDED" {print $2}')
grep -qx "libebbmalloc.so.$soversion" <<<"$needed" || fail "consumer_shared does not need libebbmalloc.so.$soversion: $needed"
grep -q libebbmalloc <<<"$(objdump -p "$work/cmake-build/consumer_static" | awk '$1 == "NEEDED"')" &&
  fail "consumer_static needs the shared library"
# The shared one really loads the installed copy (its RPATH), not a build tree's.
loaded=$(LD_TRACE_LOADED_OBJECTS=1 "$work/cmake-build/consumer_shared" | grep libebbmalloc)
grep -qF "$libdir/" <<<"$loaded" || fail "consumer_shared loads $loaded, not the installed copy"

# ---- pkg-config: a plain compiler command line ----------------------------
export PKG_CONFIG_PATH=$libdir/pkgconfig
step "pkg-config consumer"
got=$(pkg-config --modversion ebbmalloc) || fail "pkg-config does not find ebbmalloc"
[ "$got" = "$version" ] || fail "pkg-config --modversion says $got, expected $version"
pkg-config --static --libs ebbmalloc | grep -q -- -lpthread || fail "Libs.private lacks -lpthread"
[ "$(pkg-config --variable=override ebbmalloc)" = 1 ] || fail "override variable is not 1"
cflags=$(pkg-config --cflags ebbmalloc) libs=$(pkg-config --libs ebbmalloc)
pdir=$(pkg-config --variable=libdir ebbmalloc)
echo "cflags: $cflags   libs: $libs   static: $(pkg-config --static --libs ebbmalloc)"
# shellcheck disable=SC2086
"$cc" -O2 -Wall -o "$work/pc_shared" "$consumer/consumer.c" $cflags $libs -Wl,-rpath,"$pdir" ||
  fail "compile with pkg-config (shared)"
"$work/pc_shared" || fail "pc_shared"
# shellcheck disable=SC2086
"$cc" -O2 -Wall -o "$work/pc_static" "$consumer/consumer.c" $cflags \
  -Wl,-Bstatic $(pkg-config --static --libs ebbmalloc) -Wl,-Bdynamic || fail "compile with pkg-config (static)"
"$work/pc_static" || fail "pc_static"
objdump -p "$work/pc_static" | awk '$1 == "NEEDED"' | grep -q libebbmalloc && fail "pc_static needs the shared library"

# ---- relocation: the same files under another prefix ----------------------
step "relocated prefix"
mv "$prefix" "$work/moved"
export PKG_CONFIG_PATH=$work/moved/${libdir#$prefix/}/pkgconfig
cflags=$(pkg-config --cflags ebbmalloc) libs=$(pkg-config --libs ebbmalloc)
pdir=$(pkg-config --variable=libdir ebbmalloc)
[[ $pdir == "$work/moved/"* ]] || fail "relocated libdir is $pdir"
# shellcheck disable=SC2086
"$cc" -O2 -o "$work/pc_moved" "$consumer/consumer.c" $cflags $libs -Wl,-rpath,"$pdir" ||
  fail "compile against the moved prefix"
"$work/pc_moved" || fail "pc_moved"
echo "install_test: ok"
