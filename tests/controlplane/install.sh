#!/usr/bin/env bash
# Install everything the test control plane needs and build its binaries. Idempotent; a warm run takes
# a few seconds. Called by .ci/run before the test suite.
#
#   bash tests/controlplane/install.sh            # uses $PYTHON or <repo>/.venv/bin/python
#
# - Debian packages: util-linux (unshare, mount), procps (pgrep), coreutils (cp -a)   [apt-get, only if missing]
# - Python packages (into the venv): kubernetes, jupyterhub, jupyterhub-kubespawner, cryptography, pyyaml, pytest
# - Go (>= 1.24, already on this machine) builds kube-apiserver, kube-controller-manager, kube-scheduler and etcd
#   from the Go module proxy into ~/.cache/jdr-controlplane/<version>/ (build.sh; ~15-20 min cold on 2 cores),
#   and kustomize (build-kustomize.sh; ~2-4 min cold) for the tests that build cronjobs/ as `kubectl apply -k` does
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PY" ]] || PY="$(command -v python3)"

missing=()
command -v unshare >/dev/null || missing+=(util-linux)
command -v mount >/dev/null || missing+=(mount)
command -v pgrep >/dev/null || missing+=(procps)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then echo "need root to apt-get install ${missing[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if ! "$PY" -c 'import kubernetes, jupyterhub, kubespawner, cryptography, yaml, pytest' 2>/dev/null; then
  "$PY" -m pip install -q 'kubernetes>=29' 'jupyterhub>=5' 'jupyterhub-kubespawner==7.1.0' \
    'cryptography>=42' pyyaml 'pytest>=8'
fi

if ! command -v go >/dev/null; then
  for d in /usr/local/go/bin /usr/lib/go/bin; do [[ -x $d/go ]] && export PATH="$d:$PATH" && break; done
fi
command -v go >/dev/null || { echo "Go (>= 1.24) is needed to build the test control plane" >&2; exit 1; }

bash "$HERE/build.sh"
bash "$HERE/build-kustomize.sh" >/dev/null
