"""Models: ESRGAN's RRDBNet, the face graph and GCN, MSAF fusion, AffectSRNet and its presets."""
from .affectsrnet import AffectSRNet, ModelConfig
from .face_graph import NUM_LANDMARKS, FaceGraph, mediapipe_face_graph
from .gcn import GCN, GCNLayer
from .msaf import MSAF, FusionBlock
from .presets import (
    ARCHITECTURES,
    DEFAULT_MODEL,
    PRESETS,
    ModelInfo,
    WeightsNotFoundError,
    build_model,
    count_params,
    create_model,
    list_models,
    load_model,
    save_weights,
)
from .rrdb import RRDBNet, esrgan_state_dict, load_esrgan_checkpoint
from .srcnn import SRCNN, SRCNNConfig

__all__ = [
    "AffectSRNet", "ModelConfig", "NUM_LANDMARKS", "FaceGraph", "mediapipe_face_graph", "GCN", "GCNLayer",
    "MSAF", "FusionBlock", "ARCHITECTURES", "DEFAULT_MODEL", "build_model", "SRCNN", "SRCNNConfig", "PRESETS", "ModelInfo", "WeightsNotFoundError", "count_params",
    "create_model", "list_models", "load_model", "save_weights", "RRDBNet", "esrgan_state_dict", "load_esrgan_checkpoint",
]
