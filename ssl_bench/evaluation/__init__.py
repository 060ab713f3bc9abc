"""Evaluation protocols on the backbone, shared by every method: weighted kNN, linear probe (cached or
augmented), semi-supervised fine-tuning, transfer, with the random-init floor and a supervised ceiling.
Feature extraction is shared by all of them (``features.py``); ``protocols.evaluate_all`` runs a set of
protocols over seeds and returns the record's metrics tree."""

from ssl_bench.evaluation.checkpoint import export_backbone, load_backbone
from ssl_bench.evaluation.features import extract_features
from ssl_bench.evaluation.knn import knn_accuracy, knn_eval, knn_predict
from ssl_bench.evaluation.protocols import evaluate_all, final_evaluation, flat_knn, random_backbone

__all__ = ["evaluate_all", "export_backbone", "extract_features", "final_evaluation", "flat_knn", "knn_accuracy",
           "knn_eval", "knn_predict", "load_backbone", "random_backbone"]
