"""``predict``: a folder of images -> a CSV of predicted classes, with the task's ONNX model."""

from kedro.pipeline import Node, Pipeline

from tint_distill.pipelines.predict import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        Node(nodes.classify_folder, inputs=["predict_images", "student_onnx", "params:predict"],
             outputs=["predictions", "prediction_metrics"], name="classify_folder"),
    ])
