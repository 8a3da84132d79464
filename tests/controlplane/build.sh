#!/usr/bin/env bash
# Build the test control plane binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd) from the Go module proxy, and copy the VolumeSnapshot CRDs.
# Idempotent: does nothing when ~/.cache/jdr-controlplane/<version>/.complete exists.
#
# Env: JDR_K8S_VERSION (default below), JDR_CONTROLPLANE_CACHE (default ~/.cache/jdr-controlplane)
set -euo pipefail

K8S_VERSION="${JDR_K8S_VERSION:-v1.33.13}"
SNAPSHOTTER_MODULE="github.com/kubernetes-csi/external-snapshotter/client/v8"
SNAPSHOTTER_VERSION="${JDR_SNAPSHOTTER_VERSION:-v8.2.0}"
CACHE_ROOT="${JDR_CONTROLPLANE_CACHE:-$HOME/.cache/jdr-controlplane}"
OUT="$CACHE_ROOT/$K8S_VERSION"

if [[ -f "$OUT/.complete" ]]; then
  echo "jdr-controlplane: $K8S_VERSION already built in $OUT"
  exit 0
fi
# one build at a time (several test sessions may start at once on a cold cache)
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build-$K8S_VERSION.lock"
flock 9
if [[ -f "$OUT/.complete" ]]; then
  echo "jdr-controlplane: $K8S_VERSION built by another process in $OUT"
  exit 0
fi

command -v go >/dev/null || { echo "go not found on PATH" >&2; exit 1; }

STAGING_VERSION="v0.${K8S_VERSION#v1.}"   # v1.33.13 -> v0.33.13
MAJOR="${K8S_VERSION#v}"; MAJOR="${MAJOR%%.*}"
MINOR="${K8S_VERSION#v*.}"; MINOR="${MINOR%%.*}"

WORK="$CACHE_ROOT/src-$K8S_VERSION"
mkdir -p "$WORK/cmd/etcd" "$OUT/bin" "$OUT/crds"
cd "$WORK"
export GOFLAGS=-mod=mod
export GOTOOLCHAIN=local
export CGO_ENABLED=0

echo "jdr-controlplane: resolving k8s.io/kubernetes@$K8S_VERSION" >&2
GOMOD_FILE="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
[[ -f "$GOMOD_FILE" ]] || { echo "could not download k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }

# Every staging module (replace k8s.io/X => ./staging/src/k8s.io/X) -> k8s.io/X v0.y.z
STAGING="$(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\) => \./staging/src/.*#\1#p' "$GOMOD_FILE" | sort -u)"
[[ -n "$STAGING" ]] || { echo "no staging replaces found in $GOMOD_FILE" >&2; exit 1; }
ETCD_VERSION="$(sed -n 's#^[[:space:]]*go\.etcd\.io/etcd/server/v3 \(v[^ ]*\).*#\1#p' "$GOMOD_FILE" | head -1)"
GO_DIRECTIVE="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$GOMOD_FILE" | head -1)"

{
  echo "module jdr.test/controlplane"
  echo
  echo "go ${GO_DIRECTIVE:-1.24}"
  echo
  echo "require k8s.io/kubernetes $K8S_VERSION"
  echo
  echo "replace ("
  for m in $STAGING; do echo "	$m => $m $STAGING_VERSION"; done
  echo ")"
} > go.mod

cat > cmd/etcd/main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO

# Take the whole dependency graph from k8s.io/kubernetes' own go.mod so the
# versions match the release exactly.
sed -n '/^require (/,/^)/p' "$GOMOD_FILE" | grep -v '^require (\|^)' | grep -v '^[[:space:]]*k8s\.io/\(api\|apimachinery\|client-go\)[[:space:]]v0\.0\.0' > /tmp/jdr-k8s-req.$$ || true
{
  echo "require ("
  grep -v 'v0\.0\.0$' /tmp/jdr-k8s-req.$$ | grep -v 'v0\.0\.0 ' || true
  echo ")"
} >> go.mod
rm -f /tmp/jdr-k8s-req.$$

echo "jdr-controlplane: go mod download (this can take a few minutes)" >&2
go mod download

COMMIT="$(printf %s "$K8S_VERSION" | sha1sum | cut -c1-40)"
NOW="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS="$LDFLAGS -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR"
  LDFLAGS="$LDFLAGS -X $pkg.gitCommit=$COMMIT -X $pkg.gitTreeState=clean -X $pkg.buildDate=$NOW"
done

echo "jdr-controlplane: go build $K8S_VERSION (cold build takes ~15-20 min on 2 cores)" >&2
START=$(date +%s)
go build -p "${JDR_BUILD_PARALLEL:-2}" -trimpath -ldflags "$LDFLAGS" -o "$OUT/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  ./cmd/etcd
echo "jdr-controlplane: go build took $(( $(date +%s) - START ))s" >&2

SNAP_DIR="$(go mod download -json "$SNAPSHOTTER_MODULE@$SNAPSHOTTER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
cp "$SNAP_DIR"/config/crd/snapshot.storage.k8s.io_*.yaml "$OUT/crds/"
chmod u+w "$OUT/crds/"*.yaml

"$OUT/bin/kube-apiserver" --version
echo "$K8S_VERSION" > "$OUT/.complete"
echo "jdr-controlplane: built into $OUT"
