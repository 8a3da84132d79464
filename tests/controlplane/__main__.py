"""python -m tests.controlplane: start the test cluster by hand and keep it up until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from .harness import KubeCluster


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/controlplane", description=__doc__)
    ap.add_argument("--nodes", default="node-a,node-b")
    ap.add_argument("--z2jh", metavar="NAMESPACE", help="also create a z2jh-shaped namespace")
    ap.add_argument("--release", default=None)
    ap.add_argument("--running", default="alice", help="users whose servers run (comma-separated)")
    args = ap.parse_args()

    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: stop.set())

    cluster = KubeCluster(nodes=args.nodes.split(","))
    print("starting control plane ...", flush=True)
    try:
        cluster.start()
        info = cluster.cp.version_info()
        print(f"Kubernetes {info.get('gitVersion')} up in {cluster.startup_seconds:.1f}s")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        print(f"server: {cluster.server}   logs: {cluster.cp.logdir}   storage: {cluster.storage_root}")
        ns = None
        if args.z2jh:
            from .z2jh import Z2JHNamespace

            ns = Z2JHNamespace(cluster, name=args.z2jh, release=args.release,
                               running=tuple(u for u in args.running.split(",") if u),
                               workdir=Path(tempfile.mkdtemp(prefix="jdr-z2jh-")))
            ns.create()
            print(f"z2jh namespace {ns.namespace}: hub API {ns.hub_api_url}  token {ns.token}")
            for u in ns.users.values():
                print(f"  user {u.name!r}: server {u.server_name!r} pvc {u.pvc_name} running={u.running}")
        print("Ctrl-C to stop.", flush=True)
        while not stop.wait(1):
            cluster.cp.check_alive()
    except Exception as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        print("stopping ...", flush=True)
        cluster.cleanup()
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
