"""A mover command for fault tests (``deployment.kubernetes.mover_command``): for the volume keys listed in
``JDR_TEST_CRASH_KEYS`` it dies as an OOM-killed container would (exit 137, no result) — a batch mover
(``--volume KEY ROOT PREVIOUS`` …) dies when any of its volumes is listed; otherwise it runs ``jdr`` with the
same arguments."""

import os
import sys

args = sys.argv[1:]
crash = [k for k in os.environ.get("JDR_TEST_CRASH_KEYS", "").split(",") if k]
keys = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--key", "--volume")]
if any(k in crash for k in keys):
    print("flaky_mover: simulated OOM kill", file=sys.stderr, flush=True)
    os._exit(137)
os.execvp("jdr", ["jdr", *args])
