"""How long this process has run, from the kernel's record of its start: what a user waits for
includes the interpreter's start and the imports, which no timer started in Python sees."""

from __future__ import annotations

import os


def process_seconds() -> float | None:
    """Seconds since this process started (Linux), or None where the kernel does not say."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))  # field 22: start, in ticks after boot
    except (OSError, ValueError, IndexError):
        return None
