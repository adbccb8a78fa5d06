"""``distillation``: real images mined for ``mined_real``, teacher soft labels per episode, then a
student per (method, episode)."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.distillation import nodes


def create_pipeline(with_unlabeled_images: bool = False, methods: str = "params:methods", **kwargs) -> Pipeline:
    """``with_unlabeled_images``: the teacher labels, and every method that distils trains on, the
    images of the dataset ``unlabeled_ids`` too (the ``task`` pipeline: the user's unlabeled images).
    ``methods``: the input naming the methods whose students are trained (the ``task`` pipeline:
    its methods and the supports-only baseline)."""
    unlabeled = ["unlabeled_ids"] if with_unlabeled_images else []
    return Pipeline(
        [
            Node(
                nodes.embed_candidate_images,
                inputs=["raw_images", "image_index", "params:teacher", methods, "params:mined_real",
                        "params:execution"],
                outputs="candidate_image_features",
                name="embed_candidate_images",
            ),
            Node(
                nodes.mine_real_images,
                inputs=["raw_images", "image_index", "episodes", "candidate_image_features", "params:teacher",
                        methods, "params:mined_real", "params:synthesis.images_per_class"],
                outputs="mined_real_images",
                name="mine_real_images",
            ),
            Node(
                nodes.label_with_teacher,
                inputs=[
                    "raw_images", "episodes", "image_index", "synthetic_images",
                    "params:teacher", methods, "params:real_unlabeled", "mined_real_images",
                    "params:execution", "params:synthesis", *unlabeled,
                ],
                outputs="teacher_outputs",
                name="label_with_teacher",
            ),
            Node(
                nodes.draw_filter_preview,
                inputs=["episodes", "synthetic_images", "teacher_outputs", "params:methods", "params:synthesis_preview"],
                outputs="synthetic_filter_preview",
                name="draw_filter_preview",
            ),
            Node(
                nodes.train_students,
                inputs=[
                    "raw_images", "episodes", "image_index", "synthetic_images", "teacher_outputs",
                    methods, "params:student", "params:distillation", "params:real_unlabeled",
                    "mined_real_images", "base_student", "params:execution", *unlabeled,
                ],
                outputs="student_results",
                name="train_students",
            ),
        ]
    )
