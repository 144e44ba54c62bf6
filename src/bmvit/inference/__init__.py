"""Inference on any video: ``load``, ``Predictor``, ``Detections``; rendering, the Fig. 3 explanation, export."""

from bmvit.inference.predictor import Predictor, load, predict_to_files
from bmvit.inference.results import Detections

__all__ = ["Detections", "Predictor", "load", "predict_to_files"]
