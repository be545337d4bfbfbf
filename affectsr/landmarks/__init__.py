"""Face detection and 478-point landmarks (MediaPipe, models bundled in the wheel)."""

from affectsr.landmarks.detector import NUM_LANDMARKS, FaceBox, LandmarkDetector, shared_detector

__all__ = ["NUM_LANDMARKS", "FaceBox", "LandmarkDetector", "shared_detector"]
