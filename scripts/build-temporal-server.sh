#!/usr/bin/env bash
# Builds the Temporal server (cmd/server → bin/temporal-server) and its SQL
# schema tool (cmd/tools/sql → bin/temporal-sql-tool) from the Go module
# proxy, at the server version the temporal CLI in bin/ embeds, and copies
# the module's schema files (schema/ → bin/temporal-schema) beside them.
# bin/temporal-server is written last: make's file rule treats it as "all
# three are there". A cold build takes a long time on 2 cores; run it in the
# background (nice) if you have other work.
#
# usage: scripts/build-temporal-server.sh VERSION BINDIR
set -euo pipefail
VERSION=${1:?server version, e.g. v1.29.1}
BIN=${2:?output directory}
GO=${GO:-go}
MOD=go.temporal.io/server

# The server and the CLI must speak the same persistence and API: warn when
# the CLI's embedded server is another version.
if [ -x "$BIN/temporal" ]; then
  embedded=$("$GO" version -m "$BIN/temporal" | awk -v m="$MOD" '$1 == "dep" && $2 == m {print $3}')
  if [ -n "$embedded" ] && [ "$embedded" != "$VERSION" ]; then
    echo "warning: bin/temporal embeds $MOD $embedded, building $VERSION" >&2
  fi
fi

mkdir -p "$BIN"
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
echo "building $MOD $VERSION (cmd/server, cmd/tools/sql) into $BIN (first time only; long on 2 cores)"
# go install pkg@version works because the server's go.mod has no replace
# directives; it builds with the module's own go.sum, outside our module.
GOBIN=$tmp "$GO" install "$MOD/cmd/server@$VERSION" "$MOD/cmd/tools/sql@$VERSION"

dir=$(cd "$tmp" && "$GO" mod download -json "$MOD@$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir/schema/postgresql" ] || { echo "no schema/postgresql in $dir" >&2; exit 1; }
rm -rf "$BIN/temporal-schema"
# Only PostgreSQL's .sql and manifest files: schema/ also holds Go
# packages, which `go build ./...` in this module would trip over.
mkdir -p "$tmp/schema"
cp -r "$dir/schema/postgresql" "$tmp/schema/postgresql"
chmod -R u+w "$tmp/schema"   # the module cache is read-only
find "$tmp/schema" -name '*.go' -delete
mv "$tmp/schema" "$BIN/temporal-schema"
mv "$tmp/sql" "$BIN/temporal-sql-tool"
mv "$tmp/server" "$BIN/temporal-server"
echo "built $BIN/temporal-server, $BIN/temporal-sql-tool, $BIN/temporal-schema ($MOD $VERSION)"
