"""A mover command for fault tests (``deployment.kubernetes.mover_command``): ``python failing_mover.py TASK``
makes every mover of the agent task TASK (e.g. ``restore-volume``) fail as a crashing container would (exit 1,
no result); other tasks run ``jdr`` with the same arguments."""

import os
import sys

task, args = sys.argv[1], sys.argv[2:]
if len(args) > 1 and args[0] == "agent" and args[1] == task:
    print(f"failing_mover: simulated crash of {task}", file=sys.stderr, flush=True)
    sys.exit(1)
os.execvp("jdr", ["jdr", *args])
