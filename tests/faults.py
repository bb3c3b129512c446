"""Fault injection for real runs, kept out of the product code: a forked child runs `normguard train`
with os.fsync / os.replace / os.rename wrapped, and at its N-th "write point" (each flush or rename
of a save) it is SIGKILLed (optionally cutting the file being flushed in half first, as a power cut
would), or the disk it writes to is filled so that the next write fails with a real ENOSPC.
A kill can also land at the N-th sampler or training step (mid-iteration, nowhere near a save)."""

from __future__ import annotations

import os
import signal
import stat
import sys
from contextlib import contextmanager
from pathlib import Path

from normguard.trainer.callbacks import Callback


def _label(fd_or_path) -> str:
    if isinstance(fd_or_path, int):
        try:
            return os.readlink(f"/proc/self/fd/{fd_or_path}")
        except OSError:
            return f"fd {fd_or_path}"
    return os.fspath(fd_or_path)


class WritePoints:
    """Counts write points (and records their labels); acts at `at` (1-based) if given.
    action: "kill", "torn" (cut the flushed file in half, then kill) or "fill" (fill `fill_dir`'s disk)."""

    def __init__(self, at: int | None = None, action: str = "kill", fill_dir: Path | None = None):
        self.at, self.action, self.fill_dir = at, action, fill_dir
        self.points: list[str] = []

    def _hit(self, op: str, target) -> None:
        self.points.append(f"{op} {_label(target)}")
        if len(self.points) != self.at:
            return
        if self.action == "fill":
            fill_disk(self.fill_dir)
            return
        if self.action == "torn" and op == "fsync" and stat.S_ISREG(os.fstat(target).st_mode):
            os.truncate(_label(target), os.fstat(target).st_size // 2)  # the fd is read-only
        os.kill(os.getpid(), signal.SIGKILL)

    @contextmanager
    def installed(self):
        real = {name: getattr(os, name) for name in ("fsync", "replace", "rename")}

        def fsync(fd):
            self._hit("fsync", fd)
            return real["fsync"](fd)

        def replace(src, dst, **kw):
            self._hit("replace", src)
            return real["replace"](src, dst, **kw)

        def rename(src, dst, **kw):
            self._hit("rename", src)
            return real["rename"](src, dst, **kw)

        os.fsync, os.replace, os.rename = fsync, replace, rename
        try:
            yield self
        finally:
            for name, fn in real.items():
                setattr(os, name, fn)


def fill_disk(folder: Path) -> None:
    """Write a ballast file into `folder` until its filesystem is full."""
    chunk = b"\0" * 65536
    with open(Path(folder) / "ballast", "ab", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(chunk[:size])
            except OSError:
                continue


class KillAtStep(Callback):
    """SIGKILL at the n-th sampler or training step of the run (1-based, both counted together)."""

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def _step(self, *_):
        self.seen += 1
        if self.seen == self.n:
            os.kill(os.getpid(), signal.SIGKILL)

    on_sample_step = on_train_step = _step


def run_forked(argv: list[str], points: WritePoints | None = None, step_kill: int | None = None) -> int:
    """`normguard <argv>` in a forked child (faults installed there only); its exit code, or
    -SIGNAL when it was killed."""
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 70
        try:
            from normguard.trainer import cli
            from normguard.trainer.loop import train

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)  # the progress bar
            if step_kill is not None:
                train(
                    cli.resolve_config(cli.build_parser().parse_args(argv)), callbacks=[KillAtStep(step_kill)]
                )
                code = 0
            elif points is not None:
                with points.installed():
                    code = cli.main(argv)
            else:
                code = cli.main(argv)
        except BaseException:
            code = 71
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
