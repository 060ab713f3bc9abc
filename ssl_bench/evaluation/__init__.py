"""Evaluation protocols on frozen backbone features, shared by every method."""

from ssl_bench.evaluation.features import extract_features
from ssl_bench.evaluation.knn import knn_accuracy, knn_eval

__all__ = ["extract_features", "knn_accuracy", "knn_eval"]
