"""The expensive stages, Kedro-free: each plans its :class:`~tint_distill.work.Work` (units keyed by
fingerprints) and holds the functions its workers run. Nodes call ``plan_*``; engines run the
calls; the resumable datasets save the results."""
