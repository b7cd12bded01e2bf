"""Draw the default sprite avatar ("Ava") into avatars/default/.

Run: python avatars/make_default_avatar.py

Everything is drawn with OpenCV/numpy at 4x the output size (2048x2048) and downscaled with
INTER_AREA, which anti-aliases every edge. The face is rendered once per mouth shape and eye
state; each sprite is the crop of its render where it differs from the others, so a sprite
pasted over base.png blends into identical skin and leaves no seam.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SIZE = 512
S = 4  # supersampling factor
N = SIZE * S
OUT = Path(__file__).resolve().parent / "default"
VISEMES = ("A", "B", "C", "D", "E", "F", "G", "H", "X")


def rgb(r: int, g: int, b: int) -> np.ndarray:
    return np.array([r, g, b], np.float32) / 255.0


SKIN = rgb(246, 206, 180)
SKIN_SHADE = rgb(218, 160, 138)
BLUSH = rgb(240, 128, 128)
HAIR = rgb(92, 58, 44)
HAIR_DARK = rgb(52, 30, 24)
HAIR_SHINE = rgb(168, 116, 86)
BROW = rgb(84, 52, 40)
LASH = rgb(42, 26, 24)
IRIS = rgb(86, 116, 72)
IRIS_DARK = rgb(40, 60, 40)
PUPIL = rgb(22, 18, 18)
EYE_WHITE = rgb(252, 250, 248)
LIP_UPPER = rgb(196, 98, 98)
LIP_LOWER = rgb(222, 124, 118)
LIP_LINE = rgb(118, 48, 52)
CAVITY = rgb(84, 26, 34)
TEETH = rgb(250, 248, 242)
TONGUE = rgb(216, 104, 108)
BLAZER = rgb(44, 92, 118)
BLAZER_DARK = rgb(26, 60, 82)
TOP = rgb(246, 240, 232)
BG_TOP = rgb(200, 220, 236)
BG_BOTTOM = rgb(240, 236, 246)

FACE_CX = 256.0
EYE_Y = 214.0
EYE_DX = 44.0
MOUTH_C = (256.0, 301.0)


# ---- geometry helpers (coordinates are given in output pixels; scaled by S when drawn) ----

def spline(points, closed: bool = True, samples: int = 12) -> np.ndarray:
    """Catmull-Rom curve through the points, in supersampled pixels."""
    p = np.asarray(points, np.float64) * S
    if closed:
        p = np.vstack([p[-1:], p, p[:2]])
    else:
        p = np.vstack([p[:1], p, p[-1:]])
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    if not closed:
        out.append(p[-2][None])
    return np.vstack(out)


def poly_mask(poly: np.ndarray) -> np.ndarray:
    m = np.zeros((N, N), np.uint8)
    cv2.fillPoly(m, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return m.astype(np.float32) / 255.0


def stroke_mask(poly: np.ndarray, width: float, closed: bool = False) -> np.ndarray:
    m = np.zeros((N, N), np.uint8)
    cv2.polylines(m, [np.round(poly * 16).astype(np.int32)], closed, 255,
                  max(1, int(round(width * S))), cv2.LINE_AA, shift=4)
    return m.astype(np.float32) / 255.0


def tapered_stroke(poly: np.ndarray, w0: float, w1: float, wmid: float | None = None) -> np.ndarray:
    """A brush stroke along poly whose width goes w0 -> wmid -> w1 (output pixels)."""
    n = len(poly)
    u = np.linspace(0, 1, n)
    wmid = (w0 + w1) / 2 if wmid is None else wmid
    widths = np.where(u < 0.5, w0 + (wmid - w0) * u * 2, wmid + (w1 - wmid) * (u - 0.5) * 2)
    d = np.gradient(poly, axis=0)
    nrm = np.stack([-d[:, 1], d[:, 0]], 1) / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-9)
    half = (widths * S / 2)[:, None]
    return poly_mask(np.vstack([poly + nrm * half, (poly - nrm * half)[::-1]]))


def ellipse_mask(c, axes, angle: float = 0.0) -> np.ndarray:
    m = np.zeros((N, N), np.uint8)
    cv2.ellipse(m, (int(c[0] * S * 16), int(c[1] * S * 16)),
                (int(axes[0] * S * 16), int(axes[1] * S * 16)), angle, 0, 360, 255,
                -1, cv2.LINE_AA, shift=4)
    return m.astype(np.float32) / 255.0


def blur(m: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(m, (0, 0), sigma * S)


def paint(canvas: np.ndarray, mask: np.ndarray, color, alpha: float = 1.0) -> None:
    """Composite a colour (or a colour image) over the canvas through a coverage mask."""
    ys, xs = np.nonzero(mask > 1e-4)
    if len(ys) == 0:
        return
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    a = (mask[sl] * alpha)[..., None]
    col = color[sl] if isinstance(color, np.ndarray) and color.ndim == 3 else color
    canvas[sl] += (col - canvas[sl]) * a


def shade(canvas: np.ndarray, mask: np.ndarray, amount: float) -> None:
    """Darken whatever is under the mask, keeping its own shading."""
    ys, xs = np.nonzero(mask > 1e-4)
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    canvas[sl] *= 1 - amount * mask[sl][..., None]


def inner_depth(mask: np.ndarray, radius: float) -> np.ndarray:
    """0 at a shape's edge rising to 1 at ``radius`` output pixels inside: rounded shading."""
    d = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    x = np.clip(d / (radius * S), 0, 1)
    return x * x * (3 - 2 * x)


YY, XX = np.mgrid[0:N, 0:N].astype(np.float32) / S


def radial(c, r: float) -> np.ndarray:
    d = np.sqrt((XX - c[0]) ** 2 + (YY - c[1]) ** 2) / r
    return np.clip(1 - d, 0, 1) ** 2


# ---- the figure ----

FACE = spline([(256, 94), (312, 102), (348, 140), (358, 198), (352, 252), (334, 298),
               (300, 336), (256, 352), (212, 336), (178, 298), (160, 252), (154, 198),
               (164, 140), (200, 102)])


def draw_background(c: np.ndarray) -> None:
    t = (YY / SIZE)[..., None]
    c[:] = BG_TOP * (1 - t) + BG_BOTTOM * t
    c += radial((256, 210), 300)[..., None] * 0.16
    c *= (1 - 0.10 * np.clip(((XX - 256) ** 2 + (YY - 256) ** 2) / 330**2 - 0.5, 0, 1))[..., None]


def hair_shading(mask: np.ndarray) -> np.ndarray:
    depth = inner_depth(mask, 14)
    col = HAIR_DARK + (HAIR - HAIR_DARK) * depth[..., None]
    # light from the upper left
    col = col * (1 + 0.10 * np.clip((256 - XX) / 200, -1, 1))[..., None]
    return col


def draw_back_hair(c: np.ndarray) -> None:
    # shoulder-length, the ends flicking into a few soft points
    m = poly_mask(spline([(256, 60), (330, 76), (378, 130), (392, 210), (390, 300),
                          (400, 362), (396, 392), (380, 402), (362, 394), (346, 398),
                          (336, 372), (330, 340), (182, 340), (176, 372), (166, 398),
                          (150, 394), (132, 402), (116, 392), (112, 362), (122, 300),
                          (120, 210), (134, 130), (182, 76)]))
    paint(c, m, hair_shading(m))
    for x0, x1, side in ((140, 160, -1), (372, 352, 1)):
        strand = spline([(x0, 250), (x0 + side * 4, 320), (x1 + side * 10, 380)], closed=False)
        paint(c, tapered_stroke(strand, 1.0, 0.5, 2.0) * m, HAIR_DARK, 0.5)


def draw_body(c: np.ndarray) -> None:
    # the blazer's collar, standing up behind the neck
    collar = poly_mask(spline([(196, 392), (206, 374), (256, 366), (306, 374), (316, 392),
                               (256, 384)]))
    paint(c, collar, BLAZER_DARK * 1.1)
    # neck, with the chin's shadow on it
    neck = poly_mask(spline([(226, 300), (286, 300), (290, 360), (298, 420), (214, 420),
                             (222, 360)]))
    shade = 1 - 0.30 * np.clip(1 - (YY - 330) / 40, 0, 1) - 0.06 * np.clip((XX - 256) / 40, 0, 1)
    paint(c, neck, SKIN * np.clip(shade, 0, 1)[..., None])
    # top under the blazer, scoop neckline
    top = poly_mask(spline([(206, 390), (232, 414), (256, 420), (280, 414), (306, 390),
                            (320, 520), (192, 520)]))
    paint(c, top, TOP * (1 - 0.06 * radial((256, 470), 80))[..., None])
    paint(c, stroke_mask(spline([(214, 400), (236, 416), (256, 421), (276, 416), (298, 400)],
                                closed=False), 1.2), rgb(210, 200, 192))
    # blazer: shoulders with a V opening
    outline = [(-20, 560), (-10, 462), (40, 430), (120, 404), (196, 388), (222, 384),
               (248, 512), (264, 512), (290, 384), (316, 388), (392, 404), (472, 430),
               (522, 462), (532, 560)]
    body = poly_mask(np.vstack([spline(outline[:7], closed=False, samples=16),
                                spline(outline[7:], closed=False, samples=16)]))
    depth = inner_depth(body, 30)
    col = BLAZER_DARK + (BLAZER - BLAZER_DARK) * (0.35 + 0.65 * depth)[..., None]
    col = col * (1 + 0.12 * np.clip((256 - XX) / 256, -1, 1))[..., None]
    paint(c, body, col)
    # lapels: a darker fold line and a lighter edge along the opening
    for side in (-1, 1):
        lapel = spline([(256 + side * 34, 384), (256 + side * 40, 420), (256 + side * 22, 470),
                        (256 + side * 8, 512)], closed=False)
        paint(c, tapered_stroke(lapel, 2.2, 1.0), BLAZER_DARK, 0.8)
        edge = spline([(256 + side * 34, 386), (256 + side * 24, 440), (256 + side * 9, 512)],
                      closed=False)
        paint(c, blur(tapered_stroke(edge, 2.0, 1.0), 0.8), rgb(90, 140, 166), 0.5)
    # shoulder seams
    for side in (-1, 1):
        seam = spline([(256 + side * 118, 398), (256 + side * 150, 440), (256 + side * 160, 512)],
                      closed=False)
        paint(c, blur(stroke_mask(seam, 1.6), 1.0), BLAZER_DARK, 0.45)


def draw_ears(c: np.ndarray) -> None:
    for side in (-1, 1):
        cx = 256 + side * 100
        ear = poly_mask(spline([(cx, 206), (cx + side * 12, 212), (cx + side * 14, 236),
                                (cx + side * 6, 258), (cx - side * 6, 254)]))
        paint(c, ear, SKIN * (0.90 + 0.10 * inner_depth(ear, 6))[..., None])
        inner = spline([(cx + side * 8, 218), (cx + side * 8, 238), (cx + side * 1, 248)],
                       closed=False)
        paint(c, blur(tapered_stroke(inner, 1.2, 0.6, 2.4), 0.8), SKIN_SHADE, 0.8)


def draw_face(c: np.ndarray) -> None:
    m = poly_mask(FACE)
    rim = 1 - inner_depth(m, 26)
    side = np.clip((XX - 240) / 120, -1, 1)  # key light from the upper left
    shade = np.clip(0.16 * rim + 0.07 * side + 0.10 * np.clip((YY - 320) / 30, 0, 1), 0, 1)
    col = SKIN + (SKIN_SHADE - SKIN) * shade[..., None]
    col += 0.05 * radial((230, 150), 70)[..., None]  # forehead sheen
    paint(c, m, col)
    # cheeks, nose
    for sx in (-1, 1):
        paint(c, blur(ellipse_mask((256 + sx * 58, 268), (18, 11)), 6) * m, BLUSH, 0.28)
    bridge = spline([(264, 226), (268, 250), (270, 262)], closed=False)
    paint(c, blur(tapered_stroke(bridge, 0.5, 2.0), 2.0), SKIN_SHADE, 0.35)
    tip = spline([(246, 268), (251, 273), (256, 274), (261, 273), (266, 268)], closed=False)
    paint(c, blur(tapered_stroke(tip, 0.6, 0.6, 2.4), 0.7), SKIN_SHADE, 0.9)
    for sx in (-1, 1):
        paint(c, blur(ellipse_mask((256 + sx * 7, 270), (2.6, 1.6)), 0.8), rgb(190, 122, 106), 0.6)
    paint(c, blur(ellipse_mask((254, 262), (5, 4)), 2.0), rgb(255, 236, 224), 0.5)


# ---- eyes ----

def eye_curves(cx: float, side: int, openness: float):
    """Upper arc, lower arc and lid edge (each inner -> outer corner) of one eye."""
    u = np.linspace(-1, 1, 25)
    x = cx + side * u * 21
    base = 1.0 - 1.6 * (u + 1) / 2  # the outer corner sits a little higher
    upper = EYE_Y + base - 13.5 * (1 - u**2) ** 0.75 * (1 - 0.15 * u)
    lower = EYE_Y + base + 7.5 * (1 - u**2) ** 0.9 * (1 + 0.1 * u)
    lid = lower + (upper - lower) * openness
    pts = lambda ys: np.stack([x, ys], 1) * S
    return pts(upper), pts(lower), pts(lid)


def draw_eye(c: np.ndarray, cx: float, side: int, openness: float) -> None:
    upper, lower, lid = eye_curves(cx, side, openness)
    # eyelid: skin over the eyeball down to the lid edge, with a crease above
    socket = poly_mask(np.vstack([upper, lower[::-1]]))
    paint(c, blur(socket, 1.5), SKIN_SHADE, 0.18)
    crease = upper.copy()
    crease[:, 1] -= 5 * S
    paint(c, blur(tapered_stroke(crease[3:-2], 0.4, 0.8, 1.2), 0.8), SKIN_SHADE, 0.6)
    if openness > 0:
        white = poly_mask(np.vstack([lid, lower[::-1]]))
        paint(c, white, EYE_WHITE)
        ic = np.array([cx, EYE_Y + 0.5])
        r = np.sqrt((XX - ic[0]) ** 2 + (YY - ic[1]) ** 2)
        iris = ellipse_mask(ic, (11.5, 11.5)) * white
        ring = np.clip((r - 6) / 5.5, 0, 1)[..., None]
        glow = np.clip((YY - ic[1]) / 11, 0, 1)[..., None] * 0.35
        paint(c, iris, IRIS * (1 - ring) + IRIS_DARK * ring + glow * (rgb(170, 190, 120) - IRIS))
        paint(c, ellipse_mask(ic, (5.2, 5.2)) * white, PUPIL)
        # shadow cast by the upper lid onto the eyeball
        paint(c, blur(stroke_mask(lid, 3.0), 1.5) * white, rgb(140, 110, 110), 0.35)
        for off, rad in (((-4.2, -4.0), 3.0), ((4.0, 3.4), 1.3)):
            paint(c, ellipse_mask(ic + off, (rad, rad)) * white, rgb(255, 255, 255), 0.95)
        paint(c, tapered_stroke(lower[2:-1], 0.3, 0.9, 1.0), rgb(150, 100, 90), 0.7)
    # lashes along the lid edge, heavier at the outer corner, with a small wing
    paint(c, tapered_stroke(lid, 1.0, 3.0, 2.6), LASH)
    o = lid[-1] / S
    wing = spline([o + (-side * 2, 0.3), o + (side * 3.5, -2.5 + 1.5 * (1 - openness))],
                  closed=False, samples=4)
    paint(c, tapered_stroke(wing, 2.4, 0.6), LASH)


def draw_eyes(c: np.ndarray, openness: float) -> None:
    for side in (-1, 1):
        draw_eye(c, FACE_CX + side * EYE_DX, side, openness)


def draw_brows(c: np.ndarray) -> None:
    for side in (-1, 1):
        cx = FACE_CX + side * EYE_DX
        brow = spline([(cx - side * 22, 182), (cx - side * 8, 177), (cx + side * 8, 176),
                       (cx + side * 24, 182)], closed=False)
        paint(c, blur(tapered_stroke(brow, 3.6, 1.2, 4.0), 0.3), BROW)


# ---- mouths ----

@dataclass
class Mouth:
    w: float  # half width
    up: float = 0.0  # opening above the lip line at the centre
    dn: float = 0.0  # opening below it
    ut: float = 4.5  # upper lip thickness
    lt: float = 6.0  # lower lip thickness
    smile: float = -1.5  # corner lift (negative = up)
    round: float = 0.0  # 0 wide/flat opening .. 1 oval
    teeth_up: float = 0.0
    teeth_dn: float = 0.0
    tongue: tuple[float, float, float] | None = None  # (y, rx, ry) from the lip line
    tongue_tip: bool = False
    tuck: float = 0.0  # lower lip tucked under the upper teeth (F/V)
    pucker: bool = False


MOUTHS = {
    "X": Mouth(w=29, ut=5.0, lt=6.5, smile=-2.6),
    "A": Mouth(w=27, ut=3.4, lt=4.6, smile=-0.8),
    "B": Mouth(w=30, up=3.4, dn=4.0, ut=4.4, lt=5.6, smile=-2.5, teeth_up=3.4, teeth_dn=3.4),
    "C": Mouth(w=30, up=5.5, dn=10.5, ut=4.4, lt=6.0, smile=-1.0, teeth_up=4.6,
               tongue=(11, 14, 4)),
    "D": Mouth(w=32, up=8.0, dn=22.0, ut=4.0, lt=5.4, smile=0.0, round=0.3, teeth_up=5.4,
               teeth_dn=2.4, tongue=(20, 18, 7)),
    "E": Mouth(w=23, up=6.5, dn=11.0, ut=5.4, lt=6.4, smile=1.0, round=0.8, teeth_up=3.2,
               tongue=(11, 11, 3.5)),
    "F": Mouth(w=14, up=3.8, dn=4.2, ut=6.4, lt=7.4, smile=1.5, round=1.0, pucker=True),
    "G": Mouth(w=29, up=4.5, dn=0.0, ut=4.4, lt=5.0, smile=-1.5, teeth_up=6.5, tuck=1.5),
    "H": Mouth(w=30, up=6.5, dn=13.5, ut=4.4, lt=6.0, smile=-1.0, round=0.2, teeth_up=4.8,
               tongue=(8, 9, 9), tongue_tip=True),
}


def mouth_curves(m: Mouth):
    cx, cy = MOUTH_C
    t = np.linspace(-1, 1, 41)
    x = cx + t * m.w
    line = cy + m.smile * t**2
    prof = (1 - np.abs(t) ** (2 + 2 * (1 - m.round))) ** (0.5 + 0.5 * (1 - m.round))
    inner_up = line - m.up * prof
    inner_dn = line + m.dn * prof
    bow = (1 - t**2) ** 0.6 * (1 - 0.22 * np.exp(-(t / 0.14) ** 2))
    outer_up = inner_up - m.ut * bow
    outer_dn = inner_dn + m.lt * (1 - t**2) ** 0.7 - m.tuck * (1 - t**2)
    xy = lambda ys: np.stack([x, ys], 1) * S
    return xy(line), xy(inner_up), xy(inner_dn), xy(outer_up), xy(outer_dn)


def draw_mouth(c: np.ndarray, v: str) -> None:
    m = MOUTHS[v]
    cx, cy = MOUTH_C
    line, inner_up, inner_dn, outer_up, outer_dn = mouth_curves(m)
    # soft shadow under the lower lip and a little above the upper lip
    below = outer_dn[8:-8].copy()
    below[:, 1] += 3.0 * S
    paint(c, blur(tapered_stroke(below, 0.5, 0.5, 3.5), 1.8), SKIN_SHADE, 0.55)
    lips = poly_mask(np.vstack([outer_up, outer_dn[::-1]]))
    upper_part = poly_mask(np.vstack([outer_up, inner_up[::-1]]))
    depth = inner_depth(lips, 3.0)[..., None]
    paint(c, lips, LIP_LOWER * (0.88 + 0.12 * depth))
    paint(c, upper_part, LIP_UPPER * (0.9 + 0.1 * depth))
    if m.up + m.dn > 0:
        hole = poly_mask(np.vstack([inner_up, inner_dn[::-1]]))
        dark = 0.8 + 0.2 * np.clip((YY - cy + m.up) / (m.up + m.dn + 1e-6), 0, 1)
        paint(c, hole, CAVITY * dark[..., None])
        if m.tongue:
            ty, rx, ry = m.tongue
            tongue = ellipse_mask((cx, cy + ty), (rx, ry))
            if m.tongue_tip:  # tip raised to the back of the upper teeth (L)
                tip = spline([(cx - rx, cy + m.dn), (cx - 6, cy - 1),
                              (cx, cy - m.up + m.teeth_up - 0.5), (cx + 6, cy - 1),
                              (cx + rx, cy + m.dn)])
                tongue = np.maximum(tongue, poly_mask(tip))
            tshade = 1 - 0.25 * np.clip((cy + ty - YY) / 8, 0, 1)
            paint(c, tongue * hole, TONGUE * tshade[..., None])
            mid = spline([(cx, cy + ty - ry * 0.6), (cx, cy + ty + ry * 0.4)], closed=False)
            paint(c, blur(stroke_mask(mid, 0.8), 0.6) * hole, rgb(170, 70, 78), 0.5)
        if m.teeth_up:
            edge = inner_up.copy()
            edge[:, 1] += m.teeth_up * S * np.clip(1.3 - 0.3 * np.abs(np.linspace(-1, 1, 41)), 0, 1)
            # F/V: the upper teeth rest on the tucked lower lip instead of inside the mouth
            upper_teeth = poly_mask(np.vstack([inner_up + [0, -4 * S], edge[::-1]]))
            upper_teeth *= lips * ellipse_mask((cx, cy), (m.w * 0.8, 20)) if m.tuck else hole
            tshade = 1 - 0.10 * np.clip((YY - cy + m.up) / max(m.teeth_up, 1), 0, 1)
            paint(c, upper_teeth, TEETH * tshade[..., None])
            if m.tuck:
                paint(c, blur(stroke_mask(edge[8:-8], 1.0), 0.8) * lips * (1 - upper_teeth),
                      LIP_LINE, 0.6)
        if m.teeth_dn:
            edge = inner_dn.copy()
            edge[:, 1] -= m.teeth_dn * S
            lower_teeth = poly_mask(np.vstack([edge, (inner_dn + [0, 4 * S])[::-1]])) * hole
            paint(c, lower_teeth, TEETH * 0.93)
        # the lips' inner edge
        rim = blur(stroke_mask(np.vstack([inner_up, inner_dn[::-1]]), 0.9, True), 0.4)
        paint(c, rim * (1 - upper_teeth) if m.tuck else rim, LIP_LINE, 0.55)
    else:
        width = 1.7 if v == "A" else 1.3
        paint(c, tapered_stroke(line[1:-1], 0.6, 0.6, width), LIP_LINE)
    # highlight on the lower lip, darker corners
    hy = float(np.max(outer_dn[:, 1]) / S) - m.lt * 0.55
    paint(c, blur(ellipse_mask((cx - 3, hy), (m.w * 0.35, max(m.lt * 0.22, 1.0))), 1.2),
          rgb(255, 214, 206), 0.45)
    for side in (-1, 1):
        corner = np.array([cx + side * m.w, cy + m.smile])
        dimple = spline([corner + (-side * 1.5, 0.5), corner + (side * 1.5, -1.2),
                         corner + (side * 2.2, -2.8)], closed=False, samples=4)
        paint(c, blur(tapered_stroke(dimple, 1.2, 0.4), 0.5), LIP_LINE, 0.55)
    if m.pucker:
        for dx in (-6, -2, 2, 6):
            for y0, y1 in ((cy - m.up - m.ut + 0.8, cy - m.up - 1.5),
                           (cy + m.dn + 1.5, cy + m.dn + m.lt - 1.2)):
                crease = spline([(cx + dx * 0.9, y0), (cx + dx, y1)], closed=False, samples=3)
                paint(c, blur(stroke_mask(crease, 0.7), 0.4), LIP_LINE, 0.35)


# ---- hair in front of the face ----

def draw_front_hair(c: np.ndarray) -> None:
    outer = [(152, 236), (146, 170), (162, 110), (206, 72), (256, 60), (308, 68), (348, 100),
             (366, 160), (362, 236)]
    # the hairline: a side part on the left and a fringe swept across to the right temple
    hairline = [(356, 214), (350, 178), (334, 152), (304, 140), (268, 136), (242, 126),
                (226, 106), (206, 112), (186, 128), (170, 158), (162, 212)]
    m = poly_mask(np.vstack([spline(outer, closed=False), spline(hairline, closed=False)]))
    paint(c, m, hair_shading(m))
    sheen = spline([(180, 150), (206, 104), (256, 84), (312, 94), (346, 128)], closed=False)
    paint(c, blur(tapered_stroke(sheen, 1.0, 1.0, 7.0), 3.0) * m, HAIR_SHINE, 0.5)
    for off in (0, 10, 20):
        strand = spline([(226 + off * 0.2, 100 - off * 0.3), (262, 112 + off * 0.2),
                         (306, 120 + off * 0.5), (340, 146 + off)], closed=False)
        paint(c, blur(tapered_stroke(strand, 0.3, 0.3, 1.2), 0.5) * m, HAIR_DARK, 0.4)
    part = spline([(226, 104), (220, 86), (214, 70)], closed=False)
    paint(c, blur(tapered_stroke(part, 1.4, 0.3), 0.5) * m, HAIR_DARK, 0.6)
    # soft shadow of the fringe on the forehead
    shade(c, blur(m, 2.5) * (1 - m) * poly_mask(FACE), 0.18)


# ---- assembly ----

def render(under: np.ndarray, mouth: str | None, openness: float) -> np.ndarray:
    """Draw the features over the shared layers and downscale to uint8 RGB."""
    c = under.copy()
    draw_eyes(c, openness)
    draw_brows(c)
    if mouth:
        draw_mouth(c, mouth)
    draw_front_hair(c)
    small = cv2.resize(c, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.clip(small * 255 + 0.5, 0, 255).astype(np.uint8)


def sprite_region(variants: list[np.ndarray], reference: np.ndarray, margin: int = 4):
    """Box and feathered alpha covering every pixel where a variant differs from reference."""
    diff = np.zeros(reference.shape[:2], np.uint8)
    for v in variants:
        diff |= (np.abs(v.astype(np.int16) - reference).max(axis=2) > 0).astype(np.uint8)
    ys, xs = np.nonzero(diff)
    x0, y0 = int(xs.min()) - margin, int(ys.min()) - margin
    x1, y1 = int(xs.max()) + 1 + margin, int(ys.max()) + 1 + margin
    # make the size odd so the anchor is the exact centre pixel
    x1 += (x1 - x0 + 1) % 2
    y1 += (y1 - y0 + 1) % 2
    grown = cv2.dilate(diff, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    alpha = cv2.GaussianBlur(grown.astype(np.float32), (5, 5), 0) * 0.5 + grown * 0.5
    alpha = np.maximum(alpha, diff)  # every changed pixel fully covered
    return (x0, y0, x1, y1), alpha[y0:y1, x0:x1]


def rgba(img: np.ndarray, box, alpha: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = box
    a = np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)
    return np.dstack([img[y0:y1, x0:x1], a])


def save(path: Path, img: np.ndarray) -> None:
    conv = cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR
    cv2.imwrite(str(path), cv2.cvtColor(img, conv), [cv2.IMWRITE_PNG_COMPRESSION, 9])


def main() -> None:
    under = np.zeros((N, N, 3), np.float32)
    draw_background(under)
    draw_back_hair(under)
    draw_body(under)
    draw_ears(under)
    draw_face(under)

    mouths = {v: render(under, v, 1.0) for v in VISEMES}
    no_mouth = render(under, None, 1.0)
    eyes = {"half": render(under, "X", 0.42), "closed": render(under, "X", 0.0)}
    base = mouths["X"]

    OUT.mkdir(parents=True, exist_ok=True)
    save(OUT / "base.png", base)
    mbox, malpha = sprite_region(list(mouths.values()), no_mouth)
    for v, img in mouths.items():
        save(OUT / f"mouth_{v}.png", rgba(img, mbox, malpha))
    ebox, ealpha = sprite_region(list(eyes.values()), base)
    for state, img in eyes.items():
        save(OUT / f"eyes_{state}.png", rgba(img, ebox, ealpha))
    thumb = cv2.resize(base[52:372, 96:416], (128, 128), interpolation=cv2.INTER_AREA)
    save(OUT / "thumbnail.png", thumb)

    centre = lambda b: [(b[0] + b[2]) // 2, (b[1] + b[3]) // 2]
    manifest = {
        "format": 1,
        "kind": "sprite",
        "id": "default",
        "name": "Ava",
        "size": [SIZE, SIZE],
        "fps": 25,
        "base": "base.png",
        "mouths": {v: f"mouth_{v}.png" for v in VISEMES},
        "mouth_anchor": centre(mbox),
        "eyes": {"half": "eyes_half.png", "closed": "eyes_closed.png"},
        "eyes_anchor": centre(ebox),
        "idle": {"sway_px": 2.0, "bob_px": 1.5, "tilt_deg": 0.5, "period_s": 4.0,
                 "neck": [256, 380], "blink_every_s": [2.5, 5.5]},
        "thumbnail": "thumbnail.png",
        "voice": None,
    }
    text = json.dumps(manifest, indent=2)
    # keep number pairs such as anchors on one line
    text = re.sub(r"\[\s+([-\d.,\s]+?)\s+\]",
                  lambda g: "[" + ", ".join(v.strip() for v in g[1].split(",")) + "]", text)
    (OUT / "manifest.json").write_text(text + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB); mouth box {mbox}, eyes box {ebox}")


if __name__ == "__main__":
    main()
