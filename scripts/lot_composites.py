"""Lot-photo composites for the segmentation evaluation: a Carvana car (cut out with its mask) in front of a real
street photo with another car in view (the shared distractor photos), with light changes; deterministic (seeded).

    from scripts.lot_composites import composites
    for name, rgb, truth in composites(Path("../shared/data"), count=32): ...

Each composite is 1024x683 (Carvana's 3:2). The background is a distractor photo: blurred and stretched over the
whole frame (an out-of-focus street), with a sharper copy of it, 45-80 % of the frame's height, standing at the left
or right (the other car, further away): only its car, cut out along the convex hull of its parts in
`distractors/parts.json` (`composites`; a real photo never holds a picture in the picture), or the whole rectangle
when the photo has no outline (`composite` without `street_car`, as eval_recognition's lot protocol uses it). The Carvana car is pasted in front at 55-85 % of the frame's width, lower
half; every third composite pushes it 8-25 % out of the left, right or bottom edge (a car cut by the frame). The
light changes (gain, gamma, a colour cast) hit the car and the whole photo separately. Ground truth is the pasted
car's mask inside the frame: the other car is not the photo's subject.
Distractor photos: Car-Parts-Segmentation (Pasupa et al., 2021); cars: Carvana Image Masking Challenge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

WIDTH, HEIGHT = 1024, 683


def _content(rgb: np.ndarray) -> tuple[slice, slice]:
    """Where the photo is, without its black padding."""
    rows = np.flatnonzero(rgb.max(axis=(1, 2)) > 12)
    cols = np.flatnonzero(rgb.max(axis=(0, 2)) > 12)
    if rows.size < 16 or cols.size < 16:
        return slice(None), slice(None)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def car_outlines(data: Path) -> dict[str, np.ndarray]:
    """Each distractor photo's car (file name -> HxW bool): the convex hull of its parts in `distractors/parts.json`
    (the parts leave out the roof and the wings, the hull closes them)."""
    path = data / "distractors" / "parts.json"
    if not path.is_file():
        return {}
    parts = json.loads(path.read_text())
    points: dict[int, list[np.ndarray]] = {}
    for ann in parts["annotations"]:
        for poly in ann["segmentation"]:
            points.setdefault(ann["image_id"], []).append(np.asarray(poly, np.float64).reshape(-1, 2))
    outlines = {}
    for image in parts["images"]:
        if image["id"] not in points:
            continue
        mask = np.zeros((image["height"], image["width"]), np.uint8)
        hull = cv2.convexHull(np.concatenate(points[image["id"]]).round().astype(np.int32))
        cv2.fillPoly(mask, [hull], 1)
        outlines[image["file_name"]] = mask > 0
    return outlines


def _cover(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scaled to cover width x height, centre-cropped."""
    h, w = rgb.shape[:2]
    scale = max(width / w, height / h)
    big = cv2.resize(rgb, (max(width, round(w * scale)), max(height, round(h * scale))), interpolation=cv2.INTER_LINEAR)
    top, left = (big.shape[0] - height) // 2, (big.shape[1] - width) // 2
    return big[top:top + height, left:left + width]


def _light(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gain, gamma and a colour cast, as a float image in [0, 255]."""
    gain = rng.uniform(0.7, 1.25)
    gamma = rng.uniform(0.8, 1.25)
    cast = 1.0 + rng.uniform(-0.08, 0.08, size=3)
    out = 255.0 * (np.clip(rgb.astype(np.float32) / 255.0 * gain, 0, 1) ** gamma)
    return np.clip(out * cast, 0, 255)


def composite(car_rgb: np.ndarray, car_mask: np.ndarray, street: np.ndarray, rng: np.random.Generator,
              cut: bool, street_car: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 photo, HxW bool truth) of one composite; `street_car` (HxW bool, the street photo's car) pastes
    the other car alone, with a soft edge, instead of the street photo's whole rectangle."""
    content = _content(street)
    street = street[content]
    back = cv2.GaussianBlur(_cover(street, WIDTH, HEIGHT), (0, 0), rng.uniform(6, 12))
    canvas = _light(back, rng)
    # the other car, further away, standing at one side
    side_h = int(HEIGHT * rng.uniform(0.45, 0.8))
    sh, sw = street.shape[:2]
    side_w = min(WIDTH, max(16, round(sw * side_h / sh)))
    far = cv2.resize(street, (side_w, side_h), interpolation=cv2.INTER_AREA)
    far = cv2.GaussianBlur(far, (0, 0), rng.uniform(0.6, 1.6))
    left = 0 if rng.random() < 0.5 else WIDTH - side_w
    top = int(rng.uniform(0.05, 0.3) * HEIGHT)
    top = min(top, HEIGHT - side_h)
    if street_car is None:
        canvas[top:top + side_h, left:left + side_w] = _light(far, rng)
    else:
        outline = cv2.resize(street_car[content].astype(np.float32), (side_w, side_h), interpolation=cv2.INTER_AREA)
        outline = cv2.GaussianBlur(outline, (0, 0), 1.0)[..., None]
        region = canvas[top:top + side_h, left:left + side_w]
        canvas[top:top + side_h, left:left + side_w] = outline * _light(far, rng) + (1 - outline) * region
    # the car, in front
    ys, xs = np.nonzero(car_mask)
    crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    car, mask = car_rgb[crop], car_mask[crop].astype(np.float32)
    width = int(WIDTH * rng.uniform(0.55, 0.85))
    height = max(1, round(car.shape[0] * width / car.shape[1]))
    car = cv2.resize(car, (width, height), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA)
    x = (WIDTH - width) // 2 + int(rng.uniform(-0.12, 0.12) * WIDTH)
    y = HEIGHT - height - int(rng.uniform(0.03, 0.15) * HEIGHT)
    if cut:
        where = rng.integers(3)
        share = rng.uniform(0.08, 0.25)
        if where == 0:
            x = -int(share * width)
        elif where == 1:
            x = WIDTH - width + int(share * width)
        else:
            y = HEIGHT - height + int(share * height)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, WIDTH), min(y + height, HEIGHT)
    part = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    alpha = mask[part][..., None]
    lit = _light(car[part], rng)
    region = canvas[y0:y1, x0:x1]
    canvas[y0:y1, x0:x1] = alpha * lit + (1 - alpha) * region
    truth = np.zeros((HEIGHT, WIDTH), bool)
    truth[y0:y1, x0:x1] = mask[part] >= 0.5
    noise = rng.normal(0, 2.0, canvas.shape)
    return np.clip(canvas + noise, 0, 255).astype(np.uint8), truth


def composites(data: Path, count: int = 32, seed: int = 16) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """`count` (name, rgb, truth) composites from `data`/carvana and `data`/distractors, the same for the same seed."""
    rng = np.random.default_rng(seed)
    cars = sorted((data / "carvana" / "images").glob("*.jpg"))
    streets = sorted((data / "distractors").glob("*.jpg"))
    outlines = car_outlines(data)
    if not cars or not streets:
        return
    car_picks = rng.permutation(len(cars))
    street_picks = rng.permutation(len(streets))
    for i in range(count):
        car_path = cars[car_picks[i % len(cars)]]
        street_path = streets[street_picks[i % len(streets)]]
        mask_path = data / "carvana" / "masks" / f"{car_path.stem}_mask.gif"
        car_rgb = np.asarray(Image.open(car_path).convert("RGB"))
        car_mask = np.asarray(Image.open(mask_path)) > 0
        street = np.asarray(Image.open(street_path).convert("RGB"))
        item_rng = np.random.default_rng([seed, i])
        rgb, truth = composite(car_rgb, car_mask, street, item_rng, cut=i % 3 == 2,
                               street_car=outlines.get(street_path.name))
        yield f"lot/{i:02d}_{car_path.stem}_{street_path.stem}", rgb, truth
