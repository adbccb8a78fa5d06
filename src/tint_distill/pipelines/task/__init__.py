"""``task``: a user's own classes in, a tiny deployable classifier out."""

from tint_distill.pipelines.task.pipeline import (create_delivery, create_generator, create_pipeline,
                                                 create_preparation)

__all__ = ["create_delivery", "create_generator", "create_pipeline", "create_preparation"]
