"""Few-shot distillation: teacher (prototype classifier on a pretrained backbone), small timm
student, KD training and evaluation, and the statistics of the accuracy estimate.

Plain PyTorch, no Kedro. Typical use::

    teacher = load_efficientnet_lite0()
    classifier = PrototypeClassifier(temperature=0.1).fit(extract_features(teacher, supports), labels)
    targets = teacher_logits(teacher, classifier, synthetic_images)
    student = create_student(num_classes=5, image_size=32)
    history = train_student(student, synthetic_images, targets, supports, labels, DistillationConfig())
    acc = accuracy(predict(student, queries, 32), query_labels)
"""

from .distillation import (
    DistillationConfig,
    accuracy,
    count_parameters,
    kd_loss,
    measure_throughput,
    predict,
    train_student,
)
from .errors import DistillError, NonFiniteLossError, WeightsFileNotFoundError, WeightsMismatchError
from .statistics import (
    accuracy_variance,
    binomial_ci95,
    episodes_needed,
    mean_ci95,
    paired_difference,
    t_quantile,
    variance_decomposition,
)
from .student import (
    DEFAULT_STUDENT,
    STUDENT_PRESETS,
    StudentWeightsNotFoundError,
    create_student,
    load_backbone_weights,
)
from .teacher import (
    FeatureBackbone,
    PrototypeClassifier,
    TeacherWeightsNotFoundError,
    extract_features,
    load_efficientnet_lite0,
    load_timm_backbone,
    teacher_logits,
)

__all__ = [
    "DEFAULT_STUDENT", "STUDENT_PRESETS", "DistillError", "DistillationConfig", "FeatureBackbone",
    "NonFiniteLossError", "PrototypeClassifier", "StudentWeightsNotFoundError", "TeacherWeightsNotFoundError",
    "WeightsFileNotFoundError", "WeightsMismatchError", "accuracy", "accuracy_variance", "binomial_ci95",
    "count_parameters",
    "create_student", "episodes_needed", "extract_features", "kd_loss", "load_backbone_weights",
    "load_efficientnet_lite0", "load_timm_backbone", "mean_ci95", "measure_throughput", "paired_difference",
    "predict", "t_quantile", "teacher_logits", "train_student", "variance_decomposition",
]
