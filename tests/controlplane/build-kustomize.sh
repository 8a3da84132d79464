#!/usr/bin/env bash
# Build kustomize (Go module sigs.k8s.io/kustomize/kustomize/v5) from the Go module proxy into
# ~/.cache/jdr-controlplane/kustomize-<version>/kustomize, for the tests that build cronjobs/ and its
# documented overlay exactly as `kubectl apply -k` does. Idempotent (a warm run prints the path and exits);
# ~2-4 min cold on 2 cores.
#
#   bash tests/controlplane/build-kustomize.sh     # prints the binary's path on its last line
#
# Env: JDR_KUSTOMIZE_VERSION (default below), JDR_CONTROLPLANE_CACHE (default ~/.cache/jdr-controlplane)
set -euo pipefail

VERSION="${JDR_KUSTOMIZE_VERSION:-v5.6.0}"
CACHE_ROOT="${JDR_CONTROLPLANE_CACHE:-$HOME/.cache/jdr-controlplane}"
OUT="$CACHE_ROOT/kustomize-$VERSION"
BIN="$OUT/kustomize"

if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build-kustomize-$VERSION.lock"
flock 9
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi

if ! command -v go >/dev/null; then
  for d in /usr/local/go/bin /usr/lib/go/bin; do [[ -x $d/go ]] && export PATH="$d:$PATH" && break; done
fi
command -v go >/dev/null || { echo "Go is needed to build kustomize" >&2; exit 1; }

mkdir -p "$OUT"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$OUT/.bin-tmp"
echo "jdr-controlplane: building kustomize $VERSION" >&2
go install -p "${JDR_BUILD_PARALLEL:-2}" -trimpath -ldflags "-s -w" "sigs.k8s.io/kustomize/kustomize/v5@$VERSION" >&2
mv "$GOBIN/kustomize" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
rmdir "$GOBIN" 2>/dev/null || true
"$BIN" version >&2
echo "$BIN"
