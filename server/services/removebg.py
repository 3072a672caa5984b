"""Background removal with remove.bg's parameters, error codes and credit accounting."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageColor

from licensing.errors import LicensingError
from models import compose, glass, imaging, shadow
from models.compose import Box, Margin
from models.errors import ModelError
from server import json_limits, metrics
from server.config import Settings
from server.errors import ApiError
from server.services import segmentation

log = logging.getLogger(__name__)

# remove.bg's sizes: megapixels of the output and credits per image; aliases as remove.bg documents them
SIZE_ALIASES = {"preview": "preview", "small": "preview", "regular": "preview", "medium": "medium", "hd": "hd",
                "full": "full", "4k": "full", "50mp": "50MP", "auto": "auto"}
SIZE_MEGAPIXELS = {"preview": 0.25, "medium": 1.5, "hd": 4.0, "full": 25.0, "50MP": 50.0}
SIZE_CREDITS = {"preview": 0.25, "medium": 1.0, "hd": 1.0, "full": 1.0, "50MP": 1.0}
PNG_MEGAPIXELS = 10.0  # PNG output is capped at 10 MP (remove.bg); JPG, WebP and ZIP get the size's limit
TYPES = ("auto", "person", "product", "car", "animal", "graphic", "transportation")
# X-Type at type_level=1 (remove.bg's coarse classes: person, product, animal, car, other) for the finer ones
COARSE_TYPES = {"car_interior": "car", "car_part": "car", "transportation": "other", "graphics": "other"}
FORMATS = ("auto", "png", "jpg", "webp", "zip")
SHADOW_DEFAULT_OPACITY = {"car": 0.6, "3d": 0.5, "drop": 0.4}
BOOL_TRUE = {"true", "1", "yes", "on"}
BOOL_FALSE = {"false", "0", "no", "off", ""}
NUM = r"(\d+(?:\.\d+)?)"
MEDIA_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "application/zip": "zip"}


class RemoveBgError(ApiError):
    """A request remove.bg would refuse; code is remove.bg's."""

    code, title, status = "invalid_parameters", "Invalid parameters", 400


@dataclass(frozen=True)
class Roi:
    """Region of interest: x1 y1 x2 y2, each px or %."""

    values: tuple[float, float, float, float]
    percent: tuple[bool, bool, bool, bool]

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The corners in pixels of a width x height image."""
        dims = (width, height, width, height)
        return tuple(int(round(v / 100 * d)) if p else int(round(v))  # type: ignore[return-value]
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
    shadow_type: str | None = None  # car, 3d, drop; None: no shadow
    shadow_opacity: float | None = None
    semitransparency: bool = True
    refine: str = "none"
    refine_points: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def add_shadow(self) -> bool:
        return self.shadow_type is not None

    @property
    def credits(self) -> float:
        """Credits this request costs (auto: a full-size result's, unless `run` falls back to preview)."""
        return SIZE_CREDITS[self.resolved_size]

    @property
    def resolved_size(self) -> str:
        return "full" if self.size == "auto" else self.size

    @property
    def draft_megapixels(self) -> float:
        """The most megapixels the pipeline will use (the PNG cap included; auto: the full size's, the largest it
        may use), so a JPEG can be decoded at a reduced scale and resized once from there."""
        return output_megapixels(self, self.resolved_size)


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
    """preview, medium, hd, full, 50MP or auto (aliases small, regular, 4k)."""
    size = SIZE_ALIASES.get(str(raw).strip().lower())
    if size is None:
        raise _bad("invalid_size", f"size must be one of auto, preview, full, 50MP (or small, regular, medium, hd, "
                                   f"4k), not {raw!r}.")
    return size


def _lengths(raw: Any, code: str, what: str) -> list[tuple[float, bool]]:
    values = []
    for part in str(raw).split():
        m = re.fullmatch(NUM + r"(px|%)?", part.strip().lower())
        if not m:
            raise _bad(code, f"{what} value {part!r} is not a number of px or %.")
        values.append((float(m.group(1)), m.group(2) == "%"))
    return values


def parse_roi(raw: Any) -> Roi:
    """`x1 y1 x2 y2`, each in px or %."""
    parts = _lengths(raw, "invalid_roi", "roi")
    if len(parts) != 4:
        raise _bad("invalid_roi", "roi must be four values 'x1 y1 x2 y2', each in px or %, e.g. '0% 0% 100% 100%'.")
    if any(v > 100 for v, pct in parts if pct):
        raise _bad("roi_exceeds_bounds", "roi percentages must be between 0% and 100%.")
    return Roi(tuple(v for v, _ in parts), tuple(p for _, p in parts))  # type: ignore[arg-type]


def parse_crop_margin(raw: Any) -> tuple[Margin, Margin, Margin, Margin]:
    """1, 2 or 4 values (top right bottom left, CSS order), px or % of the subject; at most 50% or 500 px each."""
    parts = _lengths(raw, "invalid_crop_margin", "crop_margin")
    if len(parts) not in (1, 2, 4):
        raise _bad("invalid_crop_margin", "crop_margin takes 1, 2 or 4 values, each in px or %.")
    if any((pct and v > 50) or (not pct and v > 500) for v, pct in parts):
        raise _bad("invalid_crop_margin", "crop_margin values are at most 50% or 500px.")
    margins = [Margin(v, pct) for v, pct in parts]
    if len(margins) == 1:
        margins *= 4
    elif len(margins) == 2:
        margins = [margins[0], margins[1], margins[0], margins[1]]
    return tuple(margins)  # type: ignore[return-value]


def parse_scale(raw: Any) -> float | None:
    """'original' (None) or 10%-100% (a fraction)."""
    text = str(raw).strip().lower()
    if text == "original":
        return None
    m = re.fullmatch(NUM + "%", text)
    if not m or not 10 <= float(m.group(1)) <= 100:
        raise _bad("invalid_scale", "scale must be 'original' or a percentage from 10% to 100%.")
    return float(m.group(1)) / 100.0


def parse_position(raw: Any) -> tuple[float, float] | None:
    """'original' (None), 'center', or one (both axes) or two (horizontal, vertical) percentages."""
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


def parse_bg_color(raw: Any) -> tuple[int, int, int, int]:
    """3, 4, 6 or 8 hex digits (with or without #) or a CSS colour name; RGBA."""
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
        raise _bad("invalid_bg_color", f"bg_color {raw!r} is not a hex colour (e.g. 81d4fa, fff or 81d4fa77) or a "
                                       f"colour name.") from exc
    if len(rgba) == 3:
        rgba = (*rgba, 255)
    return tuple(int(c) for c in rgba)  # type: ignore[return-value]


def parse_refine_points(raw: Any) -> list[tuple[float, float, int]]:
    """JSON list of [x, y, label]: x and y as fractions (0-1) of the image's width and height, label 1 = keep
    (object), 0 = remove (background)."""
    try:
        items = json_limits.loads(raw) if isinstance(raw, str) else raw
        points = [(float(x), float(y), int(label)) for x, y, label in items]
    except (TypeError, ValueError) as exc:
        raise _bad("invalid_refine_points", "refine_points must be JSON like [[0.5, 0.6, 1], [0.1, 0.1, 0]]: x and "
                                            "y as fractions of the image, label 1 keep or 0 remove.") from exc
    if not points or len(points) > 64:
        raise _bad("invalid_refine_points", "refine_points takes 1 to 64 points.")
    if any(not (0 <= x <= 1 and 0 <= y <= 1) or label not in (0, 1) for x, y, label in points):
        raise _bad("invalid_refine_points", "refine_points: x and y must lie in 0-1, labels must be 0 or 1.")
    return points


def _given(params: dict[str, Any], name: str) -> bool:
    return params.get(name) not in (None, "")


def parse_options(params: dict[str, Any]) -> Options:
    """Validate every parameter with remove.bg's error codes (unknown parameters are ignored, as remove.bg does)."""
    opts = Options()
    get = params.get
    if _given(params, "size"):
        opts.size = parse_size(get("size"))
    if _given(params, "type"):
        t = str(get("type")).strip().lower()
        if t not in TYPES:
            raise _bad("invalid_type", f"type must be one of {', '.join(TYPES)}, not {get('type')!r}.")
        opts.type = t
    if _given(params, "type_level"):
        level = str(get("type_level")).strip().lower()
        if level not in ("none", "1", "2", "latest"):
            raise _bad("invalid_type_level", "type_level must be none, 1, 2 or latest.")
        opts.type_level = level
    if _given(params, "format"):
        f = str(get("format")).strip().lower()
        f = "jpg" if f == "jpeg" else f
        if f not in FORMATS:
            raise _bad("invalid_format", f"format must be one of {', '.join(FORMATS)}, not {get('format')!r}.")
        opts.format = f
    if _given(params, "roi"):
        opts.roi = parse_roi(get("roi"))
    if get("crop") is not None:
        opts.crop = parse_bool("crop", get("crop"))
    if _given(params, "crop_margin"):
        opts.crop_margin = parse_crop_margin(get("crop_margin"))
    if _given(params, "scale"):
        opts.scale = parse_scale(get("scale"))
    if _given(params, "position"):
        opts.position = parse_position(get("position"))
    elif opts.scale is not None:
        opts.position = (0.5, 0.5)  # remove.bg: scaling implies position=center unless given
    if _given(params, "channels"):
        ch = str(get("channels")).strip().lower()
        if ch not in ("rgba", "alpha"):
            raise _bad("invalid_channels", "channels must be rgba or alpha.")
        opts.channels = ch
    if _given(params, "bg_color"):
        opts.bg_color = parse_bg_color(get("bg_color"))
    add_shadow = parse_bool("add_shadow", get("add_shadow")) if get("add_shadow") is not None else False
    shadow_type = None
    if _given(params, "shadow_type"):
        st = str(get("shadow_type")).strip().lower()
        if st not in (*shadow.SHADOW_TYPES, "none"):
            raise _bad("invalid_shadow_type", "shadow_type must be car, 3D, drop or none.")
        shadow_type = None if st == "none" else st
    opts.shadow_type = shadow_type or ("car" if add_shadow else None)
    if _given(params, "shadow_opacity"):
        try:
            value = float(get("shadow_opacity"))
        except (TypeError, ValueError):
            value = -1.0
        if not 0 <= value <= 100:
            raise _bad("invalid_shadow_opacity", "shadow_opacity must be a number from 0 to 100.")
        opts.shadow_opacity = value / 100.0
    if get("semitransparency") is not None:
        opts.semitransparency = parse_bool("semitransparency", get("semitransparency"))
    if _given(params, "refine"):
        r = str(get("refine")).strip().lower()
        if r not in ("none", "sam"):
            raise _bad("invalid_refine", "refine must be none or sam.")
        opts.refine = r
    if _given(params, "refine_points"):
        opts.refine_points = parse_refine_points(get("refine_points"))
        opts.refine = "sam"
    return opts


@dataclass
class Result:
    """The encoded result and what the headers report."""

    body: bytes
    media_type: str
    width: int
    height: int
    foreground: Box | None
    type: str | None  # X-Type; None for type_level=none
    credits: float
    extension: str


def _classifier(settings: Settings):  # type: ignore[no-untyped-def]
    from models.foreground import get_classifier

    return get_classifier(settings.models_dir, settings.models.device)


def foreground_type(rgb: np.ndarray, opts: Options, settings: Settings,
                    roi: tuple[int, int, int, int] | None = None) -> str:
    """The foreground's type: the one asked for, or for type=auto what the classifier sees (inside the ROI); "other"
    when the classifier is not installed (`forecourt models fetch efficientnet-lite0`)."""
    if opts.type != "auto":
        return opts.type
    if roi is not None:
        x1, y1, x2, y2 = roi
        rgb = rgb[y1:y2, x1:x2]
    try:
        return str(_classifier(settings).classify(rgb).type)
    except ModelError as exc:
        if exc.code not in ("model_unavailable", "model_corrupt"):
            raise
        log.warning("type=auto cannot tell the foreground's type: %s", exc.detail)
        return "other"


def get_sam(s: Settings):  # type: ignore[no-untyped-def]
    """The installed Segment Anything predictor, or 503 sam_not_installed."""
    from models import sam

    try:
        return sam.get_sam(s.models.sam_model, models_dir=s.models_dir, device=s.models.device)
    except ModelError as exc:
        if exc.code in ("model_unavailable", "model_corrupt"):
            raise RemoveBgError(
                f"Segment Anything is not installed on this server ({exc.detail}). An admin can install a checkpoint "
                f"with `forecourt models install {s.models.sam_model} FILE`.", code="sam_not_installed",
                title="Segment Anything not installed", status=503) from exc
        raise


def output_format(opts: Options, transparent: bool) -> str:
    """The format to encode: format=auto gives PNG when the result has transparent regions, else JPG."""
    if opts.format != "auto":
        return opts.format
    if opts.channels == "alpha":
        return "png"
    return "png" if transparent else "jpg"


def output_megapixels(opts: Options, size: str) -> float:
    """The output's megapixel cap for a size and the format that will (or may) be PNG."""
    limit = SIZE_MEGAPIXELS[size]
    may_be_png = opts.format == "png" or (opts.format == "auto" and (
        opts.channels == "alpha" or opts.bg_image is None and (opts.bg_color is None or opts.bg_color[3] < 255)))
    return min(limit, PNG_MEGAPIXELS) if may_be_png else limit


def cutout_alpha(rgb: np.ndarray, opts: Options, settings: Settings, roi: tuple[int, int, int, int] | None,
                 kind: str | None = None) -> np.ndarray:
    """The alpha matte for the foreground's type (`kind`, default the options' type: "car" runs the car pipeline),
    ROI, refinement and semitransparency."""
    seg = segmentation.segmenter(settings)
    is_car = (kind or opts.type) == "car"
    alpha = seg.mask(rgb, kind="car" if is_car else "auto", mirror=is_car and settings.removebg.car_mirror_pass)
    if getattr(seg, "last_model_ms", None) is not None:
        metrics.observe_inference(seg.name, seg.last_model_ms / 1000.0)
    for name, seconds in (getattr(seg, "last_stages", None) or {}).items():
        metrics.observe_stage(name, seconds)
    if opts.refine == "sam":
        with metrics.stage("sam"):
            alpha = refine_with_sam(rgb, alpha, settings, opts.refine_points)
    if roi is not None:
        x1, y1, x2, y2 = roi
        keep = np.zeros_like(alpha)
        keep[y1:y2, x1:x2] = 1.0
        alpha = alpha * keep
    if not opts.semitransparency:
        alpha = np.clip((alpha - 0.5) * 4.0 + 0.5, 0.0, 1.0)  # only a thin anti-aliased rim stays see-through
    return np.clip(alpha, 0.0, 1.0).astype(np.float32, copy=False)


def refine_with_sam(rgb: np.ndarray, alpha: np.ndarray, settings: Settings,
                    points: list[tuple[float, float, int]] | None = None) -> np.ndarray:
    """Let SAM, prompted with the matte's box (and the caller's keep/remove points), decide what is the object:
    the matte is kept (soft edges and all) inside SAM's mask, dropped outside it, and SAM's core fills what the
    matte missed."""
    sam = get_sam(settings)
    h, w = alpha.shape
    box = compose.foreground_box(alpha, 0.5)
    pts = [[x * (w - 1), y * (h - 1)] for x, y, _ in points or []]
    labels = [label for _, _, label in points or []]
    if box is None and not pts:
        return alpha
    prompt_box = [box.left, box.top, box.right, box.bottom] if box is not None else None
    mask = sam.predict(rgb, points=pts or None, labels=labels or None, box=prompt_box).astype(np.uint8)
    k = max(3, int(round(max(h, w) / 150)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    allowed = cv2.dilate(mask, kernel).astype(np.float32)
    core = cv2.GaussianBlur(cv2.erode(mask, kernel).astype(np.float32), (k, k), 0)
    return np.maximum(alpha * allowed, core)


def reported_type(foreground_type: str, type_level: str) -> str | None:
    """X-Type for a foreground type: none at type_level=none; at level 1 the finer classes fold into remove.bg's
    coarse ones (person, product, animal, car, other)."""
    if type_level == "none":
        return None
    name = "graphics" if foreground_type == "graphic" else foreground_type
    return COARSE_TYPES.get(name, name) if type_level == "1" else name


def _check_roi(opts: Options, width: int, height: int) -> tuple[int, int, int, int] | None:
    if opts.roi is None:
        return None
    x1, y1, x2, y2 = opts.roi.pixels(width, height)
    if x2 > width or y2 > height:
        raise _bad("roi_exceeds_bounds", f"roi {x1} {y1} {x2} {y2} lies outside the {width}x{height} image.")
    if x2 <= x1 or y2 <= y1:
        raise _bad("roi_region_empty", "roi must have x2 > x1 and y2 > y1.")
    return x1, y1, x2, y2


def remove_background(image: Image.Image, opts: Options, settings: Settings) -> Result:
    """Run the whole pipeline on a decoded image (no charging: see `run`)."""
    size = opts.resolved_size
    roi = _check_roi(opts, image.width, image.height)
    resize_started = time.perf_counter()
    work = imaging.resize_to_megapixels(image, output_megapixels(opts, size))
    if roi is not None and work.size != image.size:  # the ROI follows the image to its working size
        fx, fy = work.width / image.width, work.height / image.height
        roi = (int(roi[0] * fx), int(roi[1] * fy), max(int(round(roi[2] * fx)), int(roi[0] * fx) + 1),
               max(int(round(roi[3] * fy)), int(roi[1] * fy) + 1))
    rgb = np.asarray(work if work.mode == "RGB" else work.convert("RGB"))
    metrics.observe_stage("resize", time.perf_counter() - resize_started)
    with metrics.stage("classify"):
        kind = foreground_type(rgb, opts, settings, roi)
    alpha = cutout_alpha(rgb, opts, settings, roi, kind)
    compose_started = time.perf_counter()
    if work.mode == "RGBA":  # an input that was transparent already stays so
        alpha = np.minimum(alpha, np.asarray(work.getchannel("A"), dtype=np.float32) * (1.0 / 255.0))
    alpha_u8 = cv2.convertScaleAbs(alpha, alpha=255.0)  # rounded and saturated to 0-255
    if compose.foreground_box(alpha_u8) is None:
        raise _bad("unknown_foreground", "Could not identify a foreground in the image.", "Unknown foreground")
    from models.refine import decontaminate

    colour = decontaminate(rgb, alpha)
    if kind == "car" and opts.semitransparency and settings.removebg.see_through_glass:  # models/glass.py
        alpha, colour = glass.see_through(rgb, alpha, colour)
        alpha_u8 = cv2.convertScaleAbs(alpha, alpha=255.0)
    if opts.shadow_type is None:  # RGBA; the subject is its alpha
        layers = cv2.cvtColor(colour, cv2.COLOR_RGB2RGBA)
        layers[..., 3] = alpha_u8
    else:  # RGBA (subject and shadow) + the subject's own alpha
        layers = np.dstack([colour, alpha_u8, alpha_u8])
        opacity = opts.shadow_opacity if opts.shadow_opacity is not None else SHADOW_DEFAULT_OPACITY[opts.shadow_type]
        layers[..., :4] = shadow.add_shadow(layers[..., :4], opacity, opts.shadow_type)
    if opts.crop:
        layers = compose.crop_with_margin(layers, compose.foreground_box(layers[..., 3]) or Box(0, 0, 1, 1),
                                          opts.crop_margin)
    if opts.scale is not None or opts.position is not None:
        layers = compose.place(layers, (layers.shape[1], layers.shape[0]), opts.scale, opts.position)
    rgba = layers if layers.shape[2] == 4 else np.ascontiguousarray(layers[..., :4])
    fg_box = compose.foreground_box(layers[..., -1])
    if opts.channels == "rgba":
        if opts.bg_image is not None:
            rgba = compose.composite(rgba, compose.cover(opts.bg_image, (rgba.shape[1], rgba.shape[0])))
        elif opts.bg_color is not None:
            rgba = compose.composite(rgba, opts.bg_color)
    fmt = output_format(opts, compose.has_transparency(rgba))
    metrics.observe_stage("compose", time.perf_counter() - compose_started)
    with metrics.stage("encode"):
        body, media = compose.encode(rgba, fmt, channels=opts.channels)
    return Result(body, media, rgba.shape[1], rgba.shape[0], fg_box,
                  reported_type(kind, opts.type_level),
                  SIZE_CREDITS[size], MEDIA_EXTENSIONS[media])


def run(image: Image.Image, opts: Options, settings: Settings) -> Result:
    """Charge the request's credits and remove the background; any error refunds them. size=auto takes the full
    size when the credits allow it and the image is larger than a preview, else the preview."""
    from server.services.metering import charge

    if opts.refine == "sam":
        get_sam(settings)  # 503 before any work when it is not installed
    sizes = [opts.size]
    if opts.size == "auto":
        sizes = ["preview"] if image.width * image.height <= SIZE_MEGAPIXELS["preview"] * 1e6 else ["full", "preview"]
    for i, size in enumerate(sizes):
        sized = replace(opts, size=size)
        try:
            with charge("credits", sized.credits):
                return remove_background(image, sized, settings)
        except LicensingError as exc:
            if exc.code != "insufficient_credits" or i == len(sizes) - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
