#!/usr/bin/env bash
# Makes the example job's repository: target/examples/hello.git, a bare git repository
# holding examples/hello/repo/ on branch main. Safe to run again (it starts afresh).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bare="$root/target/examples/hello.git"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -R "$root/examples/hello/repo/." "$work/"
git -C "$work" init --quiet --initial-branch=main
git -C "$work" add .
git -C "$work" -c user.name=kubeci -c user.email=examples@kubeci.invalid commit --quiet -m "hello: a tiny calculator and its test"
rm -rf "$bare"
mkdir -p "$(dirname "$bare")"
git clone --quiet --bare "$work" "$bare"
echo "prepared $bare ($(git -C "$bare" rev-parse --short main))"
