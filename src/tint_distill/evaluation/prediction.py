"""New images classified by an exported (ONNX) student: a table of predictions and its metrics."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tint_distill.params import SettingError, Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictSettings(Settings):
    """The ``predict`` block."""

    batch_size: int = 256
    threads: int | None = None  # ONNX Runtime and decoding threads; null: every core

    def check(self) -> None:
        if self.batch_size < 1:
            raise SettingError("batch_size", f"must be >= 1, got {self.batch_size}")


def classify_folder(files: list[Path], onnx_model: bytes, settings: PredictSettings) -> tuple[pd.DataFrame, dict]:
    """Every file with its predicted class and the probability of each class (a file that cannot
    be read gets a row with the reason in ``error`` and no prediction), and the MLflow metrics
    ``predict.images``, ``predict.unreadable``, ``predict.images_per_s``, ``predict.count.<class>``."""
    from tint_distill.distill.export import OnnxClassifier, classify_files
    from tint_distill.keys import slug

    classifier = OnnxClassifier(onnx_model, threads=settings.threads)
    start = time.perf_counter()
    rows = classify_files(classifier, files, batch_size=settings.batch_size, workers=settings.threads)
    seconds = time.perf_counter() - start
    table = pd.DataFrame(rows, columns=["file", "predicted_class", "probability",
                                        *[f"p_{name}" for name in classifier.classes], "error"])
    failed = table[table["error"] != ""]
    for file, error in failed[["file", "error"]].itertuples(index=False):
        logger.warning("Not classified: %s (%s)", file, error)
    logger.info("Classified %d of %d files in %.2f s (%.0f images/s); %d could not be read", len(table) - len(failed),
                len(table), seconds, len(table) / max(seconds, 1e-9), len(failed))
    counts = table.loc[table["error"] == "", "predicted_class"].value_counts()
    metrics = {"predict.images": len(table) - len(failed), "predict.unreadable": len(failed),
               "predict.images_per_s": len(table) / max(seconds, 1e-9),
               **{f"predict.count.{slug(name)}": int(counts.get(name, 0)) for name in classifier.classes}}
    return table, {name: {"value": float(value), "step": 0} for name, value in metrics.items()}
