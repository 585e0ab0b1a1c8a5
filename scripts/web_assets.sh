#!/usr/bin/env bash
# The web console's browser libraries: `npm ci --ignore-scripts` from
# ggnet_api/web/assets/package-lock.json (pinned versions, integrity hashes checked by
# npm), then the files the console serves copied to ggnet_api/web/static/vendor/
# (gitignored; the ggnet_api role ships them with the API code).  axe-core stays in
# node_modules: only the browser tests use it.  Re-running is cheap: skipped while the
# lock and the copies are unchanged.  No CDN: the appliance runs offline.
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS=ggnet_api/web/assets
VENDOR=ggnet_api/web/static/vendor
stamp_dir=.cache/bootstrap
mkdir -p "$stamp_dir"

if ! command -v npm >/dev/null; then
  echo "==> npm: apt-get install npm (the console's libraries come from npm's lock)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm >/dev/null
fi
key=$(cat "$ASSETS/package.json" "$ASSETS/package-lock.json" | sha256sum | cut -c1-16)
if [ -f "$stamp_dir/web-$key" ] && [ -f "$VENDOR/htmx.min.js" ] \
   && [ -f "$ASSETS/node_modules/axe-core/axe.min.js" ]; then
  echo "==> web console libraries: up to date"
  exit 0
fi
echo "==> web console libraries: npm ci --ignore-scripts (pinned, integrity-checked)"
(cd "$ASSETS" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
mkdir -p "$VENDOR"
install -m 0644 "$ASSETS/node_modules/htmx.org/dist/htmx.min.js" "$VENDOR/htmx.min.js"
touch "$stamp_dir/web-$key"
