"""Scoring, packaging and reporting of trained students, shared by the experiment's
``evaluation`` pipeline and the ``task`` pipeline. Plain Python, no Kedro:

- :mod:`.scoring`: the per-episode accuracy table, summaries with confidence intervals, paired
  comparisons, the episode planner, the task's leave-out accuracy estimate, MLflow metrics;
- :mod:`.speed`: parameters and CPU throughput of the teacher and the student;
- :mod:`.packaging`: a trained student exported to ONNX (and safetensors) and packaged for MLflow;
- :mod:`.reports`: accuracy lines, the task's model card, plots.
"""
