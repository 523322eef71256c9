"""Requeue probe (no torch): first run waits for USR1 then 'checkpoints'; a requeued run just finishes."""
import os
import signal
import sys
import time

restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
got = []
signal.signal(signal.SIGUSR1, lambda *_: got.append(time.time()))
print(f"REQUEUE_PROBE start restart={restart} args={' '.join(sys.argv[1:])}", flush=True)
if restart == 0:
    end = time.time() + 60
    while not got and time.time() < end:
        time.sleep(0.2)
    print(f"REQUEUE_PROBE {'checkpoint' if got else 'no-signal'}", flush=True)
    sys.exit(0 if got else 3)
print("REQUEUE_PROBE resumed", flush=True)
