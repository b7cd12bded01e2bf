"""A real person's mouth, moved from its face-mesh landmarks (no model at run time).

For one stored frame and one viseme this builds what `face.FaceAvatar` blends into the mouth
box: a backward warp (thin-plate spline) that parts the person's own lips, drops the jaw,
and moves the corners, and an inner mouth drawn between the warped inner lip contours: a
shaded cavity in the colours of the person's own lips, upper teeth, lower teeth on wide shapes
and a hint of tongue. The spline is pinned to zero on the box's edges and the result is mixed
in through the box's feathered mask, so nothing outside the box changes and no seam shows.

A mouth open at rest (a smile) is closed for P, B and M and opened from there: every shape's
opening is a target gap between the inner lips, not an amount added to the rest gap.

Landmarks are MediaPipe face-mesh indices (serve_app/engines/lipsync/landmarks.py), in frame
pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from serve_app.engines.lipsync.landmarks import (
    INNER_LIP_BOTTOM, INNER_LIP_TOP, JAW, LIPS_INNER_LOWER as LOWER_INNER, LIPS_INNER_UPPER as UPPER_INNER,
    LIPS_OUTER_LOWER as LOWER_OUTER, LIPS_OUTER_UPPER as UPPER_OUTER, MOUTH_CORNERS,
)

CHIN = JAW[4:-4]  # the jaw from angle to angle, through the chin: it drops with the lower lip
LEFT_CORNER, RIGHT_CORNER = MOUTH_CORNERS

# Per viseme: (opening between the inner lips, in mouth widths; width factor). A closes the
# lips whatever the stored pose; X, silence while talking, closes a mouth stored open (a
# smile) and leaves a closed one as it is.
SHAPES = {"X": (0.0, 1.0), "A": (0.0, 1.0), "B": (0.12, 1.04), "C": (0.32, 1.0), "D": (0.52, 1.0),
          "E": (0.28, 0.90), "F": (0.20, 0.76), "G": (0.06, 1.0), "H": (0.26, 0.96)}
UPPER_SHARE = 0.25  # of a change in the opening, the upper lip takes this much, the jaw the rest
CLOSED_GAP = 0.02  # mouth widths: a rest gap smaller than this counts as closed
LIP_INSET = 0.03  # mouth widths: how far inside the lips their inner edges are read from
TOOTH_WIDTH = 0.085  # mouth widths: the spacing of the faint lines between the front teeth
CAVITY = np.array([58, 20, 24], np.float32)  # RGB of the deepest mouth, tinted by the lips below
TEETH = np.array([226, 220, 206], np.float32)
GRID_STEP = 4  # pixels between the points where the spline is evaluated
FULL_CHROMA = 40.0  # mean max-min channel spread of a fully colourful face photo


@dataclass(frozen=True)
class Warped:
    """out = patch*keep + remap(patch)*mix + add, all in mouth-box pixels."""

    map_x: np.ndarray
    map_y: np.ndarray
    keep: np.ndarray
    mix: np.ndarray
    add: np.ndarray


def _gap_and_width(points: np.ndarray) -> tuple[float, float]:
    """(gap between the inner lips, corner-to-corner width), in pixels."""
    gap = float(np.linalg.norm(points[INNER_LIP_BOTTOM] - points[INNER_LIP_TOP]))
    width = float(np.linalg.norm(points[RIGHT_CORNER] - points[LEFT_CORNER]))
    return gap, width


def build(patch: np.ndarray, mask: np.ndarray, points: np.ndarray, viseme: str) -> Warped | None:
    """The warp and inner mouth for `viseme` on `patch` (the mouth box of a stored frame, RGB),
    with `points` (468, 2) already in box pixels; None: nothing to change."""
    if viseme not in SHAPES:
        return None
    opening, width_factor = SHAPES[viseme]
    h, w = mask.shape
    gap0, width = _gap_and_width(points)
    gap0 = gap0 if gap0 > CLOSED_GAP * width else 0.0
    if viseme == "X" and gap0 == 0.0:
        return None  # closed already: the stored frame as it is
    change = opening * width - gap0  # how much further apart the inner lips go (< 0: closing)
    down = np.array([0.0, 1.0], np.float32)
    centre = 0.5 * (points[LEFT_CORNER] + points[RIGHT_CORNER])

    spread = 0.5 * (width_factor - 1.0) * width  # each corner moves out (or in) this far

    def moved(group: tuple[int, ...], share: float) -> np.ndarray:
        """Where `group`'s points go: apart by `share` of the change, most mid-way between the
        corners, and sideways with the corners."""
        out = points[list(group)].astype(np.float32).copy()
        along = (out[:, 0] - centre[0]) / (0.5 * width)  # -1 .. 1 from corner to corner
        out[:, 1] += share * change * np.clip(1 - along * along, 0, 1)
        out[:, 0] += spread * np.clip(along, -1, 1)
        return out

    upper_groups = UPPER_OUTER + UPPER_INNER
    lower_groups = LOWER_OUTER + LOWER_INNER
    upper_dst = moved(upper_groups, -UPPER_SHARE)
    lower_dst = moved(lower_groups, 1 - UPPER_SHARE)
    chin = points[list(CHIN)].astype(np.float32).copy()  # the jaw drops with the lower lip, less at its angles
    reach = np.clip(np.abs(chin[:, 0] - centre[0]) / (0.75 * width), 0, 1)
    chin_dst = chin + np.outer((1 - UPPER_SHARE) * max(change, 0.0) * (1 - 0.6 * reach), down)

    # Two layers, each a smooth warp pinned on the box's edges: the upper lip's and the jaw's.
    # Where they meet (the line between the moved inner lips) the picture may tear, as a mouth
    # does: one smooth warp would fold the lips over each other when a smile closes.
    pins = _edge_pins(w, h)
    # The inner lip lines are read a little inside the lips, so that the lips' edges, not
    # the teeth or the dark between them, border the opening (or meet, closing).
    inset = LIP_INSET * width * down
    upper_src = points[list(upper_groups)].astype(np.float32)
    upper_src[len(UPPER_OUTER):] -= inset
    lower_src = np.vstack([points[list(lower_groups)], chin]).astype(np.float32)
    lower_src[len(LOWER_OUTER):len(lower_groups)] += inset
    ux, uy = _tps_maps(np.vstack([upper_dst, pins]), np.vstack([upper_src, pins]), w, h)
    lx, ly = _tps_maps(np.vstack([lower_dst, chin_dst, pins]), np.vstack([lower_src, pins]), w, h)
    upper_inner = upper_dst[len(UPPER_OUTER):]
    lower_inner = lower_dst[len(LOWER_OUTER):]
    xs = np.arange(w, dtype=np.float32)
    seam = 0.5 * (np.interp(xs, *upper_inner.T) + np.interp(xs, *lower_inner.T))
    # A sharp step between the corners, softening outside them, where the layers agree less
    # and a step would show as a line across the cheek.
    outside = np.maximum(0.0, np.abs(xs - centre[0]) - 0.5 * width * width_factor)
    softness = 0.75 + 0.8 * outside
    rows = np.arange(h, dtype=np.float32)[:, None]
    upper_weight = np.clip((seam[None, :] - rows) / softness[None, :] + 0.5, 0, 1)
    map_x = (upper_weight * ux + (1 - upper_weight) * lx).astype(np.float32)
    map_y = (upper_weight * uy + (1 - upper_weight) * ly).astype(np.float32)

    gap = opening * width
    tone = _Tone(patch, points)
    if gap >= 1.0:  # the inner mouth, between the moved inner lips
        alpha, colour = _inner_mouth(tone, upper_inner, lower_inner, gap, width, (h, w))
    else:  # closed: the darker line where the lips meet
        alpha = _polygon(np.vstack([upper_inner, lower_inner[::-1]]), (h, w), line=max(1.0, 0.025 * width))
        colour = np.broadcast_to(tone.lips * 0.55, (h, w, 3))
        alpha *= 0.85
    alpha, colour = tone.soften(alpha), tone.soften(np.ascontiguousarray(colour, np.float32))
    m = mask.astype(np.float32)[..., None]
    a = alpha[..., None]
    return Warped(map_x, map_y, keep=1 - m, mix=m * (1 - a), add=m * a * colour + 0.5)


def render(patch: np.ndarray, shape: Warped) -> np.ndarray:
    warped = cv2.remap(patch, shape.map_x, shape.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return (patch * shape.keep + warped * shape.mix + shape.add).astype(np.uint8)


def _edge_pins(w: int, h: int, step: int = 12) -> np.ndarray:
    """Points on the box's edges that do not move: the warp fades to nothing there."""
    xs = np.arange(0, w, step, dtype=np.float32)
    ys = np.arange(0, h, step, dtype=np.float32)
    edges = [np.stack([xs, np.zeros_like(xs)], 1), np.stack([xs, np.full_like(xs, h - 1)], 1),
             np.stack([np.zeros_like(ys), ys], 1), np.stack([np.full_like(ys, w - 1), ys], 1)]
    return np.vstack(edges)


def _tps_maps(dst: np.ndarray, src: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """A thin-plate spline taking each output pixel (`dst` control points) to where it is read
    from (`src`), evaluated on the whole box: cv2.remap's maps."""
    n = len(dst)
    dst = dst.astype(np.float64)
    p = np.hstack([np.ones((n, 1)), dst])
    a = np.zeros((n + 3, n + 3))
    a[:n, :n] = _kernel(_square_distances(dst, dst)) + 1e-6 * np.eye(n)  # a touch of smoothing: well posed
    a[:n, n:] = p
    a[n:, :n] = p.T
    b = np.zeros((n + 3, 2))
    b[:n] = src - dst
    coef = np.linalg.solve(a, b)
    # Evaluated every GRID_STEP pixels and interpolated: the field is smooth, and this is 16x
    # less work (a clip's frames each need their own).
    gh, gw = -(-h // GRID_STEP) + 1, -(-w // GRID_STEP) + 1
    gy, gx = np.mgrid[0:gh, 0:gw] * float(GRID_STEP)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    offset = _kernel(_square_distances(grid, dst)) @ coef[:n] + coef[n] + grid @ coef[n + 1:]
    full = cv2.resize(offset.reshape(gh, gw, 2).astype(np.float32),
                      ((gw - 1) * GRID_STEP + 1, (gh - 1) * GRID_STEP + 1), interpolation=cv2.INTER_LINEAR)[:h, :w]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs + full[..., 0], ys + full[..., 1]


def _square_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a_i - b_j|^2 for every pair, by one matrix product (much faster than broadcasting)."""
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T, 0.0)


def _kernel(r2: np.ndarray) -> np.ndarray:
    """The thin-plate kernel r^2 log r, written in r^2."""
    return 0.5 * r2 * np.log(np.maximum(r2, 1e-12))


class _Tone:
    """The photo's colours around the mouth, which the drawn parts take on: the lips' colour,
    its brightness, and how colourful the picture is (a grayscale photo gets a gray mouth)."""

    def __init__(self, patch: np.ndarray, points: np.ndarray) -> None:
        h, w = patch.shape[:2]
        lips = np.vstack([points[list(UPPER_OUTER)], points[list(LOWER_OUTER)]]).round().astype(int)
        lips[:, 0] = lips[:, 0].clip(0, w - 1)
        lips[:, 1] = lips[:, 1].clip(0, h - 1)
        self.lips = patch[lips[:, 1], lips[:, 0]].astype(np.float32).mean(0)
        self.light = float(self.lips.mean()) / 140.0  # the photo's exposure, roughly
        chroma = float(np.mean(patch.max(axis=2).astype(np.float32) - patch.min(axis=2)))
        self.saturation = min(1.0, chroma / FULL_CHROMA)
        # A soft (upscaled, low-resolution) photo gets soft drawn edges too: sharp teeth on a
        # blurry face give the fake away. Blur in pixels, from the detail the patch holds.
        detail = float(cv2.Laplacian(cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var())
        self.blur = float(np.clip(1.8 - 0.6 * np.log10(detail + 1.0), 0.0, 1.5))

    def soften(self, image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (0, 0), self.blur) if self.blur >= 0.3 else image

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """`rgb` as this photo would show it: as colourful as the photo is."""
        gray = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
        return gray[..., None] + self.saturation * (rgb - gray[..., None])


def _polygon(poly: np.ndarray, size: tuple[int, int], line: float = 0.0) -> np.ndarray:
    """Coverage 0..1 of a polygon (or, with `line`, its outline that thick): drawn at 4x and
    shrunk, for anti-aliased edges without a blur that bleeds."""
    h, w = size
    scale = 4
    big = np.zeros((h * scale, w * scale), np.uint8)
    pts = [np.round(poly * scale).astype(np.int32)]
    if line:
        cv2.polylines(big, pts, True, 255, max(1, round(line * scale)), cv2.LINE_AA)
    else:
        cv2.fillPoly(big, pts, 255, cv2.LINE_AA)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def _inner_mouth(photo: _Tone, upper: np.ndarray, lower: np.ndarray, gap: float, width: float,
                 size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, RGB) of the opening: a cavity shaded darker towards its middle and tinted with
    the person's lip colour, upper teeth under the upper lip, lower teeth over the lower lip
    on wide shapes, and the tongue low in the back."""
    h, w = size
    poly = np.vstack([upper, lower[::-1]])
    alpha = _polygon(poly, size)
    light = photo.light
    cavity = 0.55 * CAVITY + 0.2 * photo.lips * (CAVITY / CAVITY.max())

    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    top = np.interp(gx, upper[:, 0], upper[:, 1])  # the upper inner lip above each column
    bottom = np.interp(gx, lower[:, 0], lower[:, 1])
    depth = np.clip((gy - top) / np.maximum(bottom - top, 1.0), 0, 1)  # 0 at the upper lip, 1 at the lower
    x_left, x_right = poly[:, 0].min(), poly[:, 0].max()
    across = np.clip((gx - x_left) / max(x_right - x_left, 1.0), 0, 1)
    shade = 0.65 + 0.35 * np.abs(2 * across - 1)  # darker in the middle of the opening
    colour = cavity * shade[..., None]

    def band(weight: np.ndarray, paint: np.ndarray) -> None:
        nonlocal colour
        colour = colour * (1 - weight[..., None]) + paint * weight[..., None]

    sideways = np.clip(1 - np.abs(2 * across - 1) ** 3, 0, 1)  # teeth fade towards the corners
    teeth = np.clip(TEETH * min(1.1, max(0.55, light)), 0, 255)
    upper_teeth = min(0.11 * width, 0.45 * gap)
    # Shaded like teeth: darker towards the corners (they turn away) and at their edges, with
    # faint gaps between the front ones.
    from_mid = np.abs(gx - 0.5 * (x_left + x_right)) / max(width, 1.0)
    gaps = 1 - 0.18 * np.exp(-((np.mod(from_mid / TOOTH_WIDTH + 0.5, 1.0) - 0.5) / 0.08) ** 2)
    shading = (0.8 + 0.2 * sideways) * gaps
    edge = np.clip((top + upper_teeth - gy) / 1.5, 0, 1)
    band(edge * sideways * (gy >= top - 1), teeth * 0.96 * shading[..., None] * (0.9 + 0.1 * edge[..., None]))
    if gap > 0.2 * width:  # wide open: the lower teeth show over the lower lip
        band(np.clip((gy - (bottom - 0.04 * width)) / 1.5, 0, 1) * sideways ** 2 * 0.5, teeth * 0.75 * shading[..., None])
        tongue = np.exp(-((across - 0.5) / 0.28) ** 2) * np.clip((depth - 0.6) / 0.3, 0, 1) * 0.6
        band(tongue * (gy < bottom - 0.05 * width), np.array([150, 62, 66], np.float32) * min(1.0, light))
    return alpha, photo(colour).astype(np.float32)
