"""A mover command for fault tests (``deployment.kubernetes.mover_command``): for the volume keys listed in
``JDR_TEST_CRASH_KEYS`` it dies as an OOM-killed container would (exit 137, no result); otherwise it runs
``jdr`` with the same arguments."""

import os
import sys

args = sys.argv[1:]
crash = [k for k in os.environ.get("JDR_TEST_CRASH_KEYS", "").split(",") if k]
if "--key" in args and args[args.index("--key") + 1] in crash:
    print("flaky_mover: simulated OOM kill", file=sys.stderr, flush=True)
    os._exit(137)
os.execvp("jdr", ["jdr", *args])
