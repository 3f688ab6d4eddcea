"""Ends a private Ray instance whose driver died: run as a script (no lhdbench import, so it starts at
once) with the instance's temp folder and the driver's pid as arguments and a pipe from the driver as
its stdin.

Ray's head processes die with their driver, but its agents wait out a 60-second timeout against the
dead GCS first, and a SIGKILLed driver runs no cleanup. The pipe reaches end-of-file however the driver
ends; then, unless the driver said it shut the instance down cleanly, every process that names the
temp folder on its command line or holds a file open under it is killed. Ray workers rewrite their
command lines (ray::IDLE), but keep their log files open there.
"""

import os
import signal
import sys
import time

CLEAN = b"clean"  # what the driver writes before closing the pipe when it shut Ray down itself


def belongs(pid: int, folder: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if folder in handle.read().decode(errors="replace"):
                return True
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder)
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # gone already, or not ours to inspect
        return False


def main() -> None:
    folder, driver = sys.argv[1], int(sys.argv[2])  # the driver itself, if still exiting, is spared
    received = b""
    try:
        while chunk := sys.stdin.buffer.read(65536):
            received += chunk[-len(CLEAN):]
    except OSError:
        pass
    if received.endswith(CLEAN):
        return  # the driver shut its instance down itself; what runs on (a logger's upload) is not Ray's
    for _ in range(40):  # processes may still be starting when the driver dies: sweep a few times
        victims = [int(p) for p in os.listdir("/proc")
                   if p.isdigit() and int(p) not in (os.getpid(), driver) and belongs(int(p), folder)]
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)


if __name__ == "__main__":
    main()
