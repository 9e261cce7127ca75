#!/usr/bin/env bash
# The example repository's test: checks a tiny calculator written in bash.
set -eu
source ./calc.sh
[ "$(add 2 3)" = 5 ] || { echo "add 2 3 should be 5"; exit 1; }
[ "$(add -1 1)" = 0 ] || { echo "add -1 1 should be 0"; exit 1; }
echo "all tests passed"
