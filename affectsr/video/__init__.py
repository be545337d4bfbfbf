"""Face super-resolution for video (``affectsr video``): streamed, tracked, smoothed, measured.

- :mod:`~affectsr.video.upscale`: the frame loop (:func:`upscale_video`), composed by the pipeline;
- :mod:`~affectsr.video.tracking`: face tracks and One-Euro smoothing;
- :mod:`~affectsr.video.stability`: flicker, landmark jitter and FER-change measurements;
- :mod:`~affectsr.video.io`: decoding and encoding with PyAV.
"""
from .io import VIDEO_FORMATS, VideoError, write_video
from .stability import FaceRecord, FaceSample, StabilityMeter, measure_stability, upsample_flow
from .tracking import FaceTracker, KeyframeDetector, OneEuroFilter, TrackerConfig
from .upscale import VideoReport, upscale_frame, upscale_video

__all__ = ["VIDEO_FORMATS", "FaceRecord", "FaceSample", "FaceTracker", "KeyframeDetector", "OneEuroFilter", "StabilityMeter", "TrackerConfig",
           "VideoError", "VideoReport", "measure_stability", "upsample_flow", "upscale_frame", "upscale_video",
           "write_video"]
