"""Progress reporting for long loops: an optional tqdm bar, a callback, periodic log lines."""

from __future__ import annotations

import logging
from typing import Any, Callable, Union

ProgressCallback = Callable[[str, int, int, dict[str, Any]], None]
"""Called as ``callback(stage, step, total, info)`` after every step (1-based ``step``)."""

Progress = Union[bool, ProgressCallback, None]


class Reporter:
    """Reports the progress of one loop: tqdm if ``progress is True``, a callback if callable,
    and a log line every ``log_every`` steps (and at the last one) in any case."""

    def __init__(self, stage: str, total: int, progress: Progress = None, *,
                 log_every: int = 100, logger: logging.Logger | None = None) -> None:
        self.stage, self.total, self.log_every = stage, total, max(1, log_every)
        self.logger = logger or logging.getLogger(__name__)
        self.callback = progress if callable(progress) else None
        self.bar = None
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=stage, leave=False)

    def update(self, step: int, **info: Any) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if info:
                self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in info.items()},
                                     refresh=False)
        if self.callback is not None:
            self.callback(self.stage, step, self.total, info)
        if step % self.log_every == 0 or step == self.total:
            details = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
            self.logger.info("%s: step %d/%d %s", self.stage, step, self.total, details)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
