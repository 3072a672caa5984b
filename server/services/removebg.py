"""Background removal with remove.bg's parameters, error codes and credit accounting."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageColor

from models import compose, imaging, shadow
from models.compose import Box, Margin
from server import metrics
from server.config import get_settings
from server.errors import ApiError

SIZE_ALIASES = {"preview": "preview", "small": "preview", "regular": "preview", "full": "full", "medium": "full",
                "hd": "full", "4k": "full", "50mp": "50MP", "auto": "auto"}
SIZE_MEGAPIXELS = {"preview": 0.25, "full": 25.0, "50MP": 50.0}
SIZE_CREDITS = {"preview": 0.25, "full": 1.0, "50MP": 1.0}
TYPES = ("auto", "person", "product", "car", "animal", "graphic", "transportation")
FORMATS = ("auto", "png", "jpg", "webp", "zip")
BOOL_TRUE = {"true", "1", "yes", "on"}
BOOL_FALSE = {"false", "0", "no", "off", ""}
NUM = r"(\d+(?:\.\d+)?)"


class RemoveBgError(ApiError):
    """A request remove.bg would refuse; code is remove.bg's."""

    code, title, status = "invalid_parameters", "Invalid parameters", 400


@dataclass
class Roi:
    """Region of interest: four values, each px or %."""

    values: tuple[float, float, float, float]
    percent: tuple[bool, bool, bool, bool]

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        dims = (width, height, width, height)
        return tuple(int(round(v / 100 * d)) if p else int(v)  # type: ignore[return-value]
                     for v, p, d in zip(self.values, self.percent, dims, strict=True))


@dataclass
class Options:
    """Validated remove.bg parameters."""

    size: str = "preview"
    type: str = "auto"
    type_level: str = "1"
    format: str = "auto"
    roi: Roi | None = None
    crop: bool = False
    crop_margin: tuple[Margin, Margin, Margin, Margin] = field(
        default_factory=lambda: (Margin(0, False),) * 4)  # type: ignore[assignment]
    scale: float | None = None
    position: tuple[float, float] | None = None
    channels: str = "rgba"
    bg_color: tuple[int, int, int, int] | None = None
    bg_image: Image.Image | None = None
    add_shadow: bool = False
    shadow_type: str = "car"
    shadow_opacity: float = 0.5
    semitransparency: bool = True
    refine: str = "none"

    @property
    def credits(self) -> float:
        return SIZE_CREDITS[self.resolved_size]

    @property
    def resolved_size(self) -> str:
        return "full" if self.size == "auto" else self.size


def _bad(code: str, detail: str, title: str = "Invalid parameters") -> RemoveBgError:
    return RemoveBgError(detail, code=code, title=title)


def parse_bool(name: str, raw: Any) -> bool:
    """remove.bg booleans: true/false (also 1/0, yes/no)."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in BOOL_TRUE:
        return True
    if text in BOOL_FALSE:
        return False
    raise _bad(f"invalid_{name}", f"{name} must be true or false, not {raw!r}.")


def parse_size(raw: Any) -> str:
    size = SIZE_ALIASES.get(str(raw).strip().lower())
    if size is None:
        raise _bad("invalid_size", f"size must be one of auto, preview, full, 50MP (or small, regular, medium, hd, "
                                   f"4k), not {raw!r}.")
    return size


def parse_roi(raw: str) -> Roi:
    """`x1 y1 x2 y2`, each in px or %."""
    parts = str(raw).split()
    if len(parts) != 4:
        raise _bad("invalid_roi", "roi must be four values 'x1 y1 x2 y2', each in px or %, e.g. '0% 0% 100% 100%'.")
    values, percent = [], []
    for part in parts:
        m = re.fullmatch(NUM + r"(px|%)?", part)
        if not m:
            raise _bad("invalid_roi", f"roi value {part!r} is not a number of px or %.")
        values.append(float(m.group(1)))
        percent.append(m.group(2) == "%")
    if any(v > 100 for v, p in zip(values, percent, strict=True) if p):
        raise _bad("roi_exceeds_bounds", "roi percentages must be between 0% and 100%.")
    return Roi(tuple(values), tuple(percent))  # type: ignore[arg-type]


def parse_crop_margin(raw: str) -> tuple[Margin, Margin, Margin, Margin]:
    """1, 2 or 4 values (top right bottom left, CSS order), px or %; at most 50% or 500 px each."""
    parts = str(raw).split()
    if len(parts) not in (1, 2, 4):
        raise _bad("invalid_crop_margin", "crop_margin takes 1, 2 or 4 values, each in px or %.")
    margins = []
    for part in parts:
        m = re.fullmatch(NUM + r"(px|%)?", part)
        if not m:
            raise _bad("invalid_crop_margin", f"crop_margin value {part!r} is not a number of px or %.")
        value, pct = float(m.group(1)), m.group(2) == "%"
        if (pct and value > 50) or (not pct and value > 500):
            raise _bad("invalid_crop_margin", "crop_margin values are at most 50% or 500px.")
        margins.append(Margin(value, pct))
    if len(margins) == 1:
        margins *= 4
    elif len(margins) == 2:
        margins = [margins[0], margins[1], margins[0], margins[1]]
    return tuple(margins)  # type: ignore[return-value]


def parse_scale(raw: str) -> float | None:
    text = str(raw).strip().lower()
    if text == "original":
        return None
    m = re.fullmatch(NUM + "%", text)
    if not m or not 10 <= float(m.group(1)) <= 100:
        raise _bad("invalid_scale", "scale must be 'original' or a percentage from 10% to 100%.")
    return float(m.group(1)) / 100.0


def parse_position(raw: str) -> tuple[float, float] | None | str:
    text = str(raw).strip().lower()
    if text == "original":
        return None
    if text == "center":
        return (0.5, 0.5)
    parts = text.split()
    if len(parts) not in (1, 2):
        raise _bad("invalid_position", "position must be 'original', 'center', or one or two percentages.")
    values = []
    for part in parts:
        m = re.fullmatch(NUM + "%", part)
        if not m or float(m.group(1)) > 100:
            raise _bad("invalid_position", f"position value {part!r} must be a percentage from 0% to 100%.")
        values.append(float(m.group(1)) / 100.0)
    return (values[0], values[-1])


def parse_bg_color(raw: str) -> tuple[int, int, int, int]:
    """3, 4, 6 or 8 hex digits (with or without #) or a colour name."""
    text = str(raw).strip()
    hexpart = text[1:] if text.startswith("#") else text
    try:
        if re.fullmatch(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8}", hexpart):
            rgba = ImageColor.getrgb("#" + hexpart)
        elif re.fullmatch(r"[a-zA-Z]{3,30}", text):
            rgba = ImageColor.getrgb(text.lower())
        else:
            raise ValueError(text)
    except ValueError as exc:
        raise _bad("invalid_bg_color", f"bg_color {raw!r} is not a hex colour (e.g. 81d4fa or fff) or a colour "
                                       f"name.") from exc
    if len(rgba) == 3:
        rgba = (*rgba, 255)
    return tuple(int(c) for c in rgba)  # type: ignore[return-value]


def parse_options(params: dict[str, Any]) -> Options:
    """Validate every parameter with remove.bg's error codes."""
    opts = Options()
    get = params.get
    if get("size") not in (None, ""):
        opts.size = parse_size(get("size"))
    if get("type") not in (None, ""):
        t = str(get("type")).strip().lower()
        if t not in TYPES:
            raise _bad("invalid_type", f"type must be one of {', '.join(TYPES)}, not {get('type')!r}.")
        opts.type = t
    if get("type_level") not in (None, ""):
        level = str(get("type_level")).strip().lower()
        if level not in ("none", "1", "2", "latest"):
            raise _bad("invalid_type_level", "type_level must be none, 1, 2 or latest.")
        opts.type_level = level
    if get("format") not in (None, ""):
        f = str(get("format")).strip().lower()
        f = "jpg" if f == "jpeg" else f
        if f not in FORMATS:
            raise _bad("invalid_format", f"format must be one of {', '.join(FORMATS)}, not {get('format')!r}.")
        opts.format = f
    if get("roi") not in (None, ""):
        opts.roi = parse_roi(get("roi"))
    if get("crop") is not None:
        opts.crop = parse_bool("crop", get("crop"))
    if get("crop_margin") not in (None, ""):
        opts.crop_margin = parse_crop_margin(get("crop_margin"))
    if get("scale") not in (None, ""):
        opts.scale = parse_scale(get("scale"))
    if get("position") not in (None, ""):
        opts.position = parse_position(get("position"))  # type: ignore[assignment]
    elif opts.scale is not None:
        opts.position = (0.5, 0.5)  # remove.bg centres a scaled subject
    if get("channels") not in (None, ""):
        ch = str(get("channels")).strip().lower()
        if ch not in ("rgba", "alpha"):
            raise _bad("invalid_channels", "channels must be rgba or alpha.")
        opts.channels = ch
    if get("bg_color") not in (None, ""):
        opts.bg_color = parse_bg_color(get("bg_color"))
    if get("add_shadow") is not None:
        opts.add_shadow = parse_bool("add_shadow", get("add_shadow"))
    if get("shadow_type") not in (None, ""):
        st = str(get("shadow_type")).strip().lower()
        if st not in ("car", "3d", "drop"):
            raise _bad("invalid_shadow_type", "shadow_type must be car, 3D or drop.")
        opts.shadow_type = st
    if get("shadow_opacity") not in (None, ""):
        try:
            value = float(get("shadow_opacity"))
        except (TypeError, ValueError):
            value = -1
        if not 0 <= value <= 100:
            raise _bad("invalid_shadow_opacity", "shadow_opacity must be a number from 0 to 100.")
        opts.shadow_opacity = value / 100.0
    if get("semitransparency") is not None:
        opts.semitransparency = parse_bool("semitransparency", get("semitransparency"))
    if get("refine") not in (None, ""):
        r = str(get("refine")).strip().lower()
        if r not in ("none", "sam"):
            raise _bad("invalid_refine", "refine must be none or sam.")
        opts.refine = r
    return opts


def decode_b64(raw: str, what: str) -> bytes:
    """Base64 (optionally a data: URL) to bytes."""
    text = str(raw).strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad("failed_to_read_image", f"{what} is not valid base64.", "Could not read the image") from exc


@dataclass
class Result:
    """The encoded result and what the headers report."""

    body: bytes
    media_type: str
    width: int
    height: int
    foreground: Box | None
    type: str
    credits: float
    extension: str


def _segmenter():  # type: ignore[no-untyped-def]
    from models.registry import get_segmenter

    s = get_settings()
    return get_segmenter(s.models.segmenter, models_dir=s.models_dir, device=s.models.device,
                         threads=s.models.threads)


def cutout_alpha(rgb: np.ndarray, opts: Options) -> np.ndarray:
    """The alpha matte for the options' type, ROI and refinement."""
    seg = _segmenter()
    kind = "car" if opts.type == "car" else "auto"
    alpha = seg.mask(rgb, kind=kind)
    if seg.last_model_ms is not None:
        metrics.observe_inference(seg.name, seg.last_model_ms / 1000.0)
    if opts.refine == "sam":
        alpha = refine_with_sam(rgb, alpha)
    if opts.roi is not None:
        x1, y1, x2, y2 = opts.roi.pixels(rgb.shape[1], rgb.shape[0])
        keep = np.zeros_like(alpha)
        keep[y1:y2, x1:x2] = 1.0
        alpha = alpha * keep
    if not opts.semitransparency:
        alpha = np.clip((alpha - 0.5) * 4.0 + 0.5, 0.0, 1.0)  # hard edges: no see-through glass
    return alpha


def refine_with_sam(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Tighten the matte with SAM prompted by its own box; edges keep the matte's softness."""
    from models.sam import get_sam

    s = get_settings()
    sam = get_sam(s.models.sam_model, models_dir=s.models_dir, device=s.models.device)
    box = compose.foreground_box(alpha, 0.5)
    if box is None:
        return alpha
    mask = sam.predict(rgb, box=[box.left, box.top, box.right, box.bottom]).astype(np.float32)
    import cv2

    grown = cv2.dilate(mask, np.ones((9, 9), np.uint8))
    return alpha * grown


def remove_background(image: Image.Image, opts: Options) -> Result:
    """Run the whole pipeline on a decoded image."""
    size = opts.resolved_size
    limit = SIZE_MEGAPIXELS[size]
    out_format = opts.format
    if out_format == "auto":
        out_format = "png" if opts.bg_color is None and opts.bg_image is None and opts.channels == "rgba" else "jpg"
    if size == "full" and out_format == "png":
        limit = 10.0
    work = imaging.resize_to_megapixels(image, limit)
    rgb = np.asarray(work.convert("RGB"))
    if opts.roi is not None:
        x1, y1, x2, y2 = opts.roi.pixels(image.width, image.height)
        if x2 > image.width or y2 > image.height:
            raise _bad("roi_exceeds_bounds", f"roi {x1} {y1} {x2} {y2} lies outside the {image.width}x{image.height} "
                                             f"image.")
        if x2 <= x1 or y2 <= y1:
            raise _bad("roi_region_empty", "roi must have x2 > x1 and y2 > y1.")
        if work.size != image.size:  # scale the ROI to the working size
            fx, fy = work.width / image.width, work.height / image.height
            opts.roi = Roi((x1 * fx, y1 * fy, x2 * fx, y2 * fy), (False,) * 4)  # type: ignore[arg-type]
    alpha = cutout_alpha(rgb, opts)
    if work.mode == "RGBA":  # an input that was already transparent stays so
        alpha = np.minimum(alpha, np.asarray(work.getchannel("A"), dtype=np.float32) / 255.0)
    box = compose.foreground_box(alpha)
    if box is None:
        raise _bad("unknown_foreground", "Could not identify a foreground in the image.", "Unknown foreground")
    from models.refine import decontaminate

    fg = decontaminate(rgb, alpha)
    rgba = np.dstack([fg, np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)])
    if opts.add_shadow:
        rgba = shadow.add_shadow(rgba, opts.shadow_opacity)
    if opts.crop:
        rgba = compose.crop_with_margin(rgba, compose.foreground_box(rgba[..., 3] / 255.0) or box, opts.crop_margin)
    if opts.scale is not None or opts.position is not None:
        rgba = compose.place(rgba, (rgba.shape[1], rgba.shape[0]), opts.scale, opts.position)
    fg_box = compose.foreground_box(rgba[..., 3].astype(np.float32) / 255.0 * (1.0 if not opts.add_shadow else 1.0))
    if opts.bg_image is not None:
        rgba = compose.composite(rgba, compose.cover(opts.bg_image, (rgba.shape[1], rgba.shape[0])))
    elif opts.bg_color is not None:
        rgba = compose.composite(rgba, opts.bg_color)
    body, media = compose.encode(rgba, out_format, channels=opts.channels)
    ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "application/zip": "zip"}[media]
    detected = opts.type if opts.type != "auto" else "other"
    return Result(body, media, rgba.shape[1], rgba.shape[0], fg_box, detected, opts.credits, ext)
