"""One stop protocol for every entry point (``mtgrpo train``, the SageMaker and Kubeflow
container, a HyperPod pod): SIGTERM or SIGINT saves, stops every process the run started,
prints one line and exits with a documented code.

    with RunStop("mtgrpo train") as stop:
        server = stop.own(VLLMServer(...))      # stopped on every exit path, errors included
        server.start().wait_healthy(...)
        stop.bind(trainer.request_save_and_stop)  # from now on a signal means "save, then stop"
        summary = train(...)
    if stop.signum is not None:
        print(stop.line(...)); return stop.exit_code

Before :meth:`RunStop.bind` (loading, vLLM's start-up) there is nothing worth saving: a signal
raises :class:`Interrupted` at once, the ``with`` block stops the owned processes, and the
caller returns :func:`exit_code`. After it, the first signal calls the bound function (the
trainer finishes its step, saves a checkpoint and stops: ``train.run`` reports
``stopped_early``); a second signal raises :class:`Interrupted` (the user insists).

Exit codes (docs/troubleshooting.md): 143 (128 + SIGTERM) and 130 (128 + SIGINT, as the CLI's
Ctrl-C) after a stop; 1 for a one-line error; 3 (CLI) or 2 (container) for a bug.

Owned processes are also stopped by an ``atexit`` hook, and :func:`die_with_parent` makes a
child get SIGTERM from the kernel when its parent dies, even by SIGKILL: no path leaves one.
This module imports nothing heavy: launchers use it before torch is loaded.
"""

from __future__ import annotations

import atexit
import ctypes
import signal
import sys
import threading
from typing import Any, Callable

EXIT_SIGTERM = 128 + signal.SIGTERM  # 143
EXIT_SIGINT = 128 + signal.SIGINT  # 130
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_PR_SET_PDEATHSIG = 1
try:  # resolved here, in the parent: between fork and exec the child only calls it
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") \
        else None
except (OSError, AttributeError):  # pragma: no cover - no libc prctl: atexit still stops it
    _prctl = None
_owned: list[Any] = []  # every process an active RunStop owns (atexit stops them)
_owned_lock = threading.Lock()
_last_signal: int | None = None  # the stop signal this process received, if any


class Interrupted(BaseException):
    """A stop signal arrived where nothing can be saved (or a second one): stop now.

    A BaseException like KeyboardInterrupt, so no ``except Exception`` (a tool wrapper, a
    plug-in) swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def exit_code(signum: int) -> int:
    """The documented exit code of a run stopped by ``signum``."""
    return 128 + int(signum)


def signal_received() -> int | None:
    """The stop signal this process received (SIGTERM or SIGINT), or None."""
    return _last_signal


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent ends (Linux; no-op
    elsewhere). Called in a child between fork and exec (``preexec_fn``); it follows the
    thread that started the child, so start children from the main thread."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def stop_owned(proc: Any) -> None:
    """Stop one owned thing: ``.stop()`` (VLLMServer), else ``.terminate()`` + wait (Popen)."""
    try:
        if hasattr(proc, "stop"):
            proc.stop()
        elif hasattr(proc, "poll") and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except Exception:  # noqa: BLE001 - a stuck child: kill it
                proc.kill()
    except Exception as err:  # noqa: BLE001 - stopping the others matters more
        print(f"mtgrpo: could not stop {proc!r}: {err}", file=sys.stderr, flush=True)


def track(proc: Any) -> None:
    """Stop ``proc`` at interpreter exit unless :func:`untrack` came first."""
    with _owned_lock:
        if proc not in _owned:
            _owned.append(proc)


def untrack(proc: Any) -> None:
    with _owned_lock:
        if proc in _owned:
            _owned.remove(proc)


def _stop_all_owned() -> None:
    with _owned_lock:
        left = list(reversed(_owned))
        _owned.clear()
    for proc in left:
        stop_owned(proc)


atexit.register(_stop_all_owned)


class RunStop:
    """SIGTERM/SIGINT handling and process ownership of one run (a context manager).

    ``name`` starts the one line printed on a stop. Handlers are installed on entry (main
    thread only; elsewhere signals are left alone) and the previous ones restored on exit.
    """

    def __init__(self, name: str = "mtgrpo", *, announce: bool = True):
        self.name = name
        self.announce = announce  # print a line when the first signal asks for a stop
        self.signum: int | None = None
        self._on_stop: Callable[[], None] | None = None
        self._previous: dict[int, Any] = {}
        self._mine: list[Any] = []
        self._exiting = False

    # -- signals ---------------------------------------------------------------------------
    def __enter__(self) -> "RunStop":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        global _last_signal
        _last_signal = signum
        first = self.signum is None
        if first:
            self.signum = signum
        if self._exiting:  # already stopping the owned processes: let that finish
            return
        if first and self._on_stop is not None:
            if self.announce:
                print(f"{self.name}: {signal.Signals(signum).name}: finishing the step, saving a "
                      "checkpoint, then stopping", file=sys.stderr, flush=True)
            self._on_stop()
            return
        raise Interrupted(signum)

    def bind(self, on_stop: Callable[[], None]) -> None:
        """From now on a first signal calls ``on_stop`` (it must only set a flag) instead of
        stopping at once. A signal that came before ``bind`` already raised Interrupted."""
        self._on_stop = on_stop

    @property
    def stopped(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum or signal.SIGTERM)

    def line(self, what: str) -> str:
        """The one line of a stopped run: ``<name>: stopped by SIGTERM <what> (exit 143)``."""
        sig = signal.Signals(self.signum or signal.SIGTERM).name
        return f"{self.name}: stopped by {sig} {what} (exit {self.exit_code})"

    # -- processes -------------------------------------------------------------------------
    def own(self, proc: Any) -> Any:
        """Stop ``proc`` (``.stop()``, or a Popen) when the block ends or the process exits."""
        track(proc)
        self._mine.append(proc)
        return proc

    def __exit__(self, exc_type, exc, tb) -> bool:
        """Stops the owned processes, restores the handlers; swallows :class:`Interrupted`
        (the caller reads :attr:`stopped` and returns :attr:`exit_code`)."""
        self._exiting = True
        try:
            for proc in reversed(self._mine):
                stop_owned(proc)
                untrack(proc)
            self._mine.clear()
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()
        if isinstance(exc, Interrupted):
            self.signum = self.signum or exc.signum
            return True
        return False
