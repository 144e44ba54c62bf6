"""Inference on any video: ``load`` (from ``bmvit.checkpoint``), ``Predictor``, ``Detections``; rendering, the
Fig. 3 explanation, export."""

from bmvit.checkpoint import load
from bmvit.inference.predictor import Predictor, predict_to_files
from bmvit.inference.results import Detections

__all__ = ["Detections", "Predictor", "load", "predict_to_files"]
