#!/bin/bash
# run_env_test.sh REGEX COMMAND [ARGS...]
# Runs COMMAND (with the environment ctest gave it, EBB_OPTIONS included),
# passes when it succeeds and its stderr matches REGEX (the warning that names
# a bad option).
set -u
regex=$1
shift
err=$(mktemp)
trap 'rm -f "$err"' EXIT
"$@" 2>"$err"
rc=$?
cat "$err" >&2
if [ $rc -ne 0 ]; then
	echo "run_env_test: command failed with status $rc" >&2
	exit 1
fi
if ! grep -Eq -- "$regex" "$err"; then
	echo "run_env_test: stderr does not match '$regex' (EBB_OPTIONS=${EBB_OPTIONS-})" >&2
	exit 1
fi
echo "run_env_test: ok, stderr matches '$regex'"
