"""Progress display for long stages (tqdm), silent unless asked for."""

from __future__ import annotations

import contextlib
import sys
import threading
import time


def batch_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar over patterns (or a no-op object with ``update`` when disabled)."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="pat", unit_scale=True, leave=False, file=sys.stderr, disable=None
    )


@contextlib.contextmanager
def stage_spinner(enabled: bool, desc: str):
    """A bar that shows elapsed time for a stage with no countable steps (a KMeans fit)."""
    if not enabled:
        yield
        return
    from tqdm.auto import tqdm

    stop = threading.Event()
    bar = tqdm(desc=desc, bar_format="{desc}: {elapsed}", leave=False, file=sys.stderr, disable=None)

    def tick():
        while not stop.wait(0.5):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class StageTimer:
    """Wall time per named stage, in the order the stages ran."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
