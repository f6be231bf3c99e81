"""Negative controls of the driver's tests: break one mechanism of `dltmw/runtime/driver.py` at
a time, run the test of `tests/unit/test_driver.py` that guards it, and expect it to FAIL.

`python scripts/mutate_driver.py` (from anywhere, after `make venv`); exits 1 if a broken driver
still passes its test. The driver's source is restored after every run.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DRIVER = ROOT / "dltmw/runtime/driver.py"
I8, I12, I16 = " " * 8, " " * 12, " " * 16
APPLY = f"{I8}if effects.decided:\n{I12}await executor.apply(effects.decided)\n"
SEND = f"{I8}if effects.send:\n{I12}await executor.send(effects.send)\n"
WAIT = f"{I8}if not task.done():\n{I12}finished = asyncio.ensure_future(self._finished.wait())"
LOOP = f"{I8}try:\n{I12}await self._loop()\n{I8}except Exception as exc:"

# (what is broken, text in driver.py, what replaces it, the test that must then fail)
MUTANTS = [
    ("send before apply", APPLY + SEND, SEND + APPLY, "test_effects_run_in_order"),
    ("batch overload uncounted", f"{I12}self.overloaded += len(items)\n", "", "full_inbox"),
    ("overload uncounted", f"{I12}self.overloaded += 1\n", "", "full_inbox"),
    (
        "overload untyped",
        'Overloaded(f"{self.name} queue is full")',
        'TransientError(errors_pb2.ERROR_REASON_OVERLOADED, "full")',
        "full_inbox",
    ),
    (
        "no group commit",
        "while len(taken) < self._batch_max and not self._inbox.empty():",
        "while False:",
        "inputs_queued_together",
    ),
    ("stop cancels mid-step", WAIT, WAIT.replace("not task.done()", "False"), "stop_finishes"),
    (
        "stop names nothing",
        "await cancel_and_wait(task, grace_s)",
        "task.cancel()",
        "outlives_the_grace",
    ),
    ("failure swallowed", LOOP, LOOP.replace("Exception", "ZeroDivisionError"), "failing_step"),
    ("ticks uncounted", f"{I16}self.ticks = tick = self.ticks + 1", f"{I16}tick = 1", "ticks"),
    ("step on the loop", "if self._step_in is None:", "if True:", "ticks_count_up"),
]


def survives(original: str, old: str, new: str, test: str) -> bool:
    """Does the test still pass with `old` replaced by `new` in the driver?"""
    if old not in original:
        raise SystemExit(f"mutation target not found in driver.py: {old!r}")
    DRIVER.write_text(original.replace(old, new))
    try:
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "60"]
        run = subprocess.run(
            [*pytest, str(ROOT / "tests/unit/test_driver.py"), "-k", test],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
    finally:
        DRIVER.write_text(original)
    return run.returncode == 0


def main() -> int:
    original = DRIVER.read_text()
    survivors = []
    for name, old, new, test in MUTANTS:
        alive = survives(original, old, new, test)
        print(f"{name:26s} -> {test}: {'PASSES (bad)' if alive else 'fails (good)'}")
        if alive:
            survivors.append(name)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
