"""Whole processes, timed and weighed: wall seconds from start to exit, and the peak resident set size.

The issue-11 figures compare whole processes (a ``combe publish --once``
against a ``python`` reading the same file with Arrow), so start-up and
imports count on both sides. The peak is the kernel's ``ru_maxrss`` for that
one process, from ``wait4``. Linux starts a new program's peak at the peak of
the memory it replaced, which for a child of this (large) harness would be
the harness's own RSS; so every step is started by a small launcher (Python
with ``-S``, about 9 MB) that forks, execs the command, reaps it and reports
its peak and wall time.

A step can be given a memory cap: a watchdog thread reads the command's
VmRSS every 50 ms and kills its process group past the cap, so a step too
big for the machine is reported as killed (with the RSS it had reached)
instead of driving a swapless box into the OOM killer, which might pick
someone else's process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.05
# Run as ``python -S -c LAUNCHER REPORT ARGV...``: writes "<ru_maxrss KiB> <seconds> <exit code>" to REPORT.
LAUNCHER = """
import os, sys, time
report, argv = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(report, "w") as out:
    out.write(f"{usage.ru_maxrss} {seconds!r} {os.waitstatus_to_exitcode(status)}")
"""


@dataclass
class Step:
    """One finished (or killed) process."""

    argv: list[str]
    seconds: float
    peak_rss: int  # bytes
    returncode: int
    stdout: str
    stderr: str
    killed: str | None = None  # why the harness killed it

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed is None

    def failure(self) -> str:
        """What went wrong, in one line (empty when nothing did)."""
        if self.killed:
            return f"killed by the harness: {self.killed}"
        if self.returncode == 0:
            return ""
        how = (f"killed by signal {signal.Signals(-self.returncode).name}" if self.returncode < 0
               else f"exit status {self.returncode}")
        last = next((line for line in reversed(self.stderr.strip().splitlines()) if line.strip()), "")
        return f"{how}: {last}" if last else how

    def check(self) -> Step:
        """This step, or a RuntimeError that names the command and its failure."""
        if not self.ok:
            raise RuntimeError(f"{' '.join(self.argv)} failed ({self.failure()})\n{self.stderr[-3000:]}")
        return self


def _rss(pid: int) -> int:
    """Resident bytes of ``pid``'s children (the launcher's command), 0 once they are gone."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        total = 0
        for child in children:
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total
    except (OSError, ValueError):
        return 0


def run(argv: list[str], *, cap_bytes: int | None = None, timeout: float | None = None,
        cwd: Path = ROOT) -> Step:
    """Run ``argv`` to its end (or until it passes ``cap_bytes`` of RSS or ``timeout`` seconds)."""
    killed: list[str] = []
    seen = [0]  # the largest RSS the watchdog read: the peak of a step it killed
    done = threading.Event()
    lock = threading.Lock()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", prefix="bench-step-") as report:
        started = time.perf_counter()
        # A session of its own: the watchdog kills the launcher and the command as one process group.
        process = subprocess.Popen([sys.executable, "-S", "-c", LAUNCHER, report.name, *argv], stdout=out,
                                   stderr=err, cwd=cwd, start_new_session=True)

        def watch() -> None:
            while not done.wait(POLL_SECONDS):
                rss = _rss(process.pid)
                seen[0] = max(seen[0], rss)
                reason = (f"resident memory {rss / 2**30:.1f} GiB passed the cap of {cap_bytes / 2**30:.1f} GiB"
                          if cap_bytes is not None and rss > cap_bytes else
                          f"still running after {timeout:.0f} s"
                          if timeout is not None and time.perf_counter() - started > timeout else None)
                if reason:
                    # Under the lock and before ``done``: the launcher is alive or an unreaped zombie, so its
                    # process group id cannot have been reused yet.
                    with lock:
                        if not done.is_set():
                            killed.append(reason)
                            os.killpg(process.pid, signal.SIGKILL)
                    return

        watchdog = threading.Thread(target=watch, name="bench-watchdog", daemon=True)
        watchdog.start()
        try:
            # Wait for the launcher's exit without reaping it (see above), then reap it.
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
            wall = time.perf_counter() - started
            with lock:
                done.set()
            process.wait()
        except BaseException:  # interrupted: leave no process behind
            with lock:
                if not done.is_set():
                    os.killpg(process.pid, signal.SIGKILL)
                done.set()
            process.wait()
            raise
        finally:
            done.set()
            watchdog.join()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        fields = report.read().split()
    if killed or len(fields) != 3:  # killed, or the launcher died before it could report
        return Step(argv, wall, seen[0], process.returncode or -signal.SIGKILL, stdout, stderr,
                    killed[0] if killed else None)
    return Step(argv, float(fields[1]), int(fields[0]) * 1024, int(fields[2]), stdout, stderr)


def memory_cap(share_of_total: float = 0.85, headroom: int = 1 << 30) -> int:
    """A cap for one step: the smaller of a share of the machine's memory and what is available now less
    some headroom (the machine is shared: others' processes need theirs)."""
    info: dict[str, int] = {}
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            name, value = line.split(":", 1)
            info[name] = int(value.split()[0]) * 1024
    return int(min(info["MemTotal"] * share_of_total, info["MemAvailable"] - headroom))
