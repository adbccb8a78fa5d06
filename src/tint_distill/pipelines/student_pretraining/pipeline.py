"""``student_pretraining``: the students' starting weights, trained on the base classes (cached)."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.student_pretraining import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.pretrain_base_student,
                inputs=["raw_images", "pretraining_images", "params:student_pretraining", "params:student",
                        "params:distillation"],
                outputs="base_student",
                name="pretrain_base_student",
            ),
        ]
    )
