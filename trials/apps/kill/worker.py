"""The kill trial's worker: leaves a daemon that double-forks into a session of its own, out of the dyno's tree."""

import os
import signal
import sys
import time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        # argv names the daemon so a trial can find it, wherever it was reparented
        os.execvp(sys.executable, [sys.executable, "-c", "import time; time.sleep(3600)", "kill-trial-daemon"])
    os._exit(0)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("worker started, daemon forked", flush=True)
while True:
    time.sleep(0.5)
