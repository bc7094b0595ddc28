#!/usr/bin/env bash
# Rebuild signal_server/web/vendor/noble.js, qr.js and zip.js from the packages pinned in package-lock.json.
# The output is committed (nothing is built at install time); running this again must leave
# `git diff` empty.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
./node_modules/.bin/esbuild entry.js --bundle --format=esm --target=es2022 \
  --legal-comments=inline --outfile=../signal_server/web/vendor/noble.js
./node_modules/.bin/esbuild qr-entry.js --bundle --format=esm --target=es2022 \
  --legal-comments=inline --outfile=../signal_server/web/vendor/qr.js
./node_modules/.bin/esbuild zip-entry.js --bundle --format=esm --target=es2022 \
  --legal-comments=inline --outfile=../signal_server/web/vendor/zip.js
