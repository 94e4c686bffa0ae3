"""The kill trial's release phase: a second of work, as a migration would take."""

import time

print("release phase running", flush=True)
time.sleep(1)
print("release phase done", flush=True)
