"""Nodes of the ``predict`` pipeline (the work: :mod:`tint_distill.evaluation.prediction`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tint_distill.evaluation import prediction
from tint_distill.evaluation.prediction import PredictSettings


def classify_folder(files: list[Path], student_onnx: bytes, predict: PredictSettings) -> tuple[pd.DataFrame, dict]:
    """Every file of the folder with its predicted class and the probability of each class; a file
    that cannot be read gets a row with the reason in ``error`` and no prediction."""
    return prediction.classify_folder(files, student_onnx, predict)
