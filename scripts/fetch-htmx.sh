#!/usr/bin/env bash
# Installs htmx from the npm registry into static/vendor (ignored by git): the app serves it same-origin.
set -euo pipefail
version="${HTMX_VERSION:-4.0.1}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack "htmx.org@${version}" --silent >/dev/null 2>&1 && tar xzf "htmx.org-${version}.tgz")
mkdir -p "$root/static/vendor"
cp "$work/package/dist/htmx.min.js" "$root/static/vendor/htmx.min.js"
cp "$work/package/LICENSE" "$root/static/vendor/htmx.LICENSE"
