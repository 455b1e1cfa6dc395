#!/usr/bin/env bash
# check_docs.sh SOURCE_DIR
# docs/usage.md must name, as `name`, every option of EBB_OPTIONS_TABLE
# (core/runtime/options.h), every field of EBB_STATS_FIELDS (include/ebbmalloc.h) and
# every column of the stats timeline (core/process/timeline.c), so that the page
# cannot fall behind the code. api.observe.docs checks the defaults it gives.
set -u
src=$1
doc=$src/docs/usage.md
[ -f "$doc" ] || { echo "missing $doc"; exit 1; }
fail=0
check() { # what, names...
  local what=$1; shift
  [ $# -gt 0 ] || { echo "no ${what}s found in the source: the extraction is broken"; fail=1; return; }
  for n in "$@"; do
    grep -qF "\`$n\`" "$doc" || { echo "docs/usage.md does not name $what \`$n\`"; fail=1; }
  done
  echo "check_docs: $# ${what}s"
}
check option $(grep -oE '^[[:space:]]*X\([A-Z_]+, [a-z_]+,' "$src/core/runtime/options.h" | sed -E 's/.*, ([a-z_]+),$/\1/')
check "stats field" $(grep -oE '^[[:space:]]*X\([a-z_]+, (bytes|count|total),' "$src/include/ebbmalloc.h" |
  sed -E 's/.*X\(([a-z_]+),.*/\1/')
cols=$(sed -n '/tl_header\[\] =/,/;/p' "$src/core/process/timeline.c" | grep -oE '"[^"]*"' | tr -d '"\n' | sed 's/\\n$//')
check "timeline column" $(tr ',' ' ' <<<"$cols")
[ $fail = 0 ] && echo "check_docs: ok"
exit $fail
