"""``task``: the nodes of the task's own two ends. The registry puts them around the ``inversion``,
``synthesis`` and ``distillation`` stages and namespaces the whole under ``task`` (datasets
``task.*``), so that a task never touches an experiment's outputs."""

from kedro.pipeline import Node, Pipeline

from tint_distill.data.task import unlabeled_ids
from tint_distill.pipelines.task import nodes


def create_preparation() -> Pipeline:
    """Task folder -> image index and episodes (final training set + k-fold splits), the students to train."""
    return Pipeline([
        Node(nodes.prepare_task, inputs=["raw_images", "params:task", "params:student",
                                         "params:data_episodes.min_image_side"],
             outputs=["image_index", "episodes", "task_report"], name="prepare_task"),
        Node(unlabeled_ids, inputs="image_index", outputs="unlabeled_ids", name="list_unlabeled_images"),
        Node(nodes.trained_methods, inputs="params:task", outputs="trained_methods", name="list_trained_methods"),
    ])


def create_generator() -> Pipeline:
    """Task folder's unlabeled/ and base/ images -> its domain generator (cached), or the experiment's."""
    return Pipeline([
        Node(nodes.pretrain_domain_generator, inputs=["raw_images", "image_index", "generator", "params:task"],
             outputs=["domain_generator", "domain_generator_plan"], name="pretrain_domain_generator"),
        Node(nodes.choose_generator,
             inputs=["generator", "domain_generator", "domain_generator_plan", "params:task", "params:inversion"],
             outputs=["generator_for_task", "inversion_settings", "generator_report"], name="choose_generator"),
    ])


def create_delivery() -> Pipeline:
    """Students and teacher outputs -> baselines, accuracy estimate and verdict, exports, speed, model
    card, MLflow model (registered when it beats the baselines), metrics and tags."""
    return Pipeline([
        Node(nodes.score_baselines, inputs=["raw_images", "episodes", "params:teacher", "params:distillation"],
             outputs="baseline_predictions", name="score_baselines"),
        Node(nodes.estimate_accuracy,
             inputs=["episodes", "student_results", "teacher_outputs", "baseline_predictions", "params:task"],
             outputs="accuracy_estimate", name="estimate_accuracy"),
        Node(nodes.export_student, inputs=["episodes", "student_results", "params:task"],
             outputs=["student_onnx", "student_safetensors"], name="export_student"),
        Node(nodes.measure_deployed_speed, inputs=["student_onnx", "params:task"], outputs="deployed_speed",
             name="measure_deployed_speed"),
        Node(nodes.write_model_card,
             inputs=["task_report", "accuracy_estimate", "deployed_speed", "episodes", "student_results",
                     "params:task", "params:student", "params:distillation", "params:teacher", "params:synthesis",
                     "generator_report"],
             outputs=["model_card", "model_card_json"], name="write_model_card"),
        Node(nodes.package_for_mlflow,
             inputs=["student_onnx", "student_safetensors", "model_card", "model_card_json", "raw_images", "episodes",
                     "params:task"],
             outputs="mlflow_model", name="log_mlflow_model"),
        Node(nodes.task_metrics, inputs=["accuracy_estimate", "deployed_speed"], outputs="metrics",
             name="log_task_metrics"),
        Node(nodes.verdict_tags, inputs=["accuracy_estimate", "params:task"], outputs="verdict_tags",
             name="tag_task_verdict"),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    return create_preparation() + create_generator() + create_delivery()
