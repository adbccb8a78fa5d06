"""``distillation``: teacher soft labels per episode, then a student per (method, episode)."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.distillation import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                nodes.label_with_teacher,
                inputs=[
                    "raw_images", "episodes", "image_index", "synthetic_images",
                    "params:teacher", "params:methods", "params:real_unlabeled", "params:execution",
                ],
                outputs="teacher_outputs",
                name="label_with_teacher",
            ),
            Node(
                nodes.train_students,
                inputs=[
                    "raw_images", "episodes", "image_index", "synthetic_images", "teacher_outputs",
                    "params:methods", "params:student", "params:distillation", "params:real_unlabeled",
                    "params:execution",
                ],
                outputs="student_results",
                name="train_students",
            ),
        ]
    )
