"""Expression fidelity: the FER classifier, the Emotion Consistency Loss and the metrics (ECM & co.).

    >>> from affectsr.emotion import load_emotion_classifier, EmotionConsistencyLoss, ecm
    >>> clf = load_emotion_classifier()            # frozen mini-Xception, RGB [0, 1] any size -> (logits, features)
    >>> loss = EmotionConsistencyLoss(clf)         # loss(sr, hr): KL(p_HR || p_SR) + feature distance
    >>> ecm(p_hr, p_sr)                            # N x 7 probabilities -> Emotion Consistency Metric

MediaPipe (face detection) is only imported when a face is first detected.
"""
from __future__ import annotations

from .classifier import (
    DEFAULT_CLASSIFIER,
    EMOTIONS,
    ClassifierConfig,
    EmotionClassifier,
    MiniXception,
    load_emotion_classifier,
    save_classifier_weights,
    to_model_input,
)
from .faces import FER_MARGIN, FaceEmotion, detect_emotions
from .loss import EmotionConsistencyLoss, EmotionLossTerms
from .metrics import (
    ECM_EPS,
    EcmTerms,
    FidelityReport,
    accuracy,
    confusion_matrix,
    density_histograms,
    ecm,
    ecm_terms,
    entropy,
    fidelity_report,
    label_agreement,
    mean_kl,
    sr_vs_hr_confusion,
)

__all__ = [
    "DEFAULT_CLASSIFIER", "EMOTIONS", "ClassifierConfig", "EmotionClassifier", "MiniXception",
    "load_emotion_classifier", "save_classifier_weights", "to_model_input",
    "EmotionConsistencyLoss", "EmotionLossTerms",
    "ECM_EPS", "EcmTerms", "FidelityReport", "accuracy", "confusion_matrix", "density_histograms", "ecm",
    "ecm_terms", "entropy", "fidelity_report", "label_agreement", "mean_kl", "sr_vs_hr_confusion",
    "FER_MARGIN", "FaceEmotion", "detect_emotions",
]

