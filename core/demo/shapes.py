"""The demo world's parametric objects: 14 everyday categories built from primitive parts.

Each category draws its true parameters from a seeded generator, builds its parts (boxes, cylinders, frusta,
spheres, tori; metres, z up) and names its caption attributes from those parameters:

* tier-2 attributes ``size`` and ``support`` (e.g. "tall" chair with "four legs"),
* tier-3 attributes ``adj`` (qualifies the support: "thin" legs), ``mat`` (material: a parameter that does not
  change the geometry) and ``detail`` (e.g. "a high slatted backrest").

Proportions overlap across categories on purpose: after normalisation (which removes absolute size) a square stool
and a small side table, a tall vase and a bottle, a long bench and a low coffee table, a short floor lamp and a tall
desk lamp, a shallow bowl and a plate can look alike while their categories differ.
"""
from __future__ import annotations

import numpy as np

from .primitives import Part, box, cylinder, revolve, sample_surface, sphere, torus, tube, normalise_cloud

N_POINTS = 1024

SUPER = {
    "chair": "furniture", "stool": "furniture", "table": "furniture", "bench": "furniture",
    "shelf": "furniture", "cabinet": "furniture",
    "mug": "tableware", "bowl": "tableware", "plate": "tableware",
    "bottle": "container", "vase": "container", "jar": "container",
    "floor lamp": "lighting", "desk lamp": "lighting",
}
CATEGORIES = tuple(SUPER)
SUPERS = ("furniture", "tableware", "container", "lighting")

# Attribute domains per category (used to draw same-tier negatives). "support" values are (determiner, noun).
DOMAINS: dict[str, dict[str, list]] = {
    "chair": {"size": ["tall", "low"], "support": [("four", "legs"), ("a", "pedestal base")],
              "adj": ["thin", "thick"], "mat": ["wooden", "metal", "plastic"],
              "detail": [f"a {h} {s} backrest and {a}" for h in ("high", "low") for s in ("slatted", "solid")
                         for a in ("armrests", "no armrests")]},
    "stool": {"size": ["tall", "low"], "support": [("three", "legs"), ("four", "legs")],
              "adj": ["thin", "thick"], "mat": ["wooden", "metal"],
              "detail": [f"a {s} seat and {f}" for s in ("round", "square") for f in ("a footrest ring", "no footrest")]},
    "table": {"size": ["large", "small"], "support": [("four", "legs"), ("a", "pedestal base")],
              "adj": ["thin", "thick"], "mat": ["wooden", "metal", "glass"],
              "detail": [f"a {s} top and {f}" for s in ("round", "square", "rectangular")
                         for f in ("a lower shelf", "no lower shelf")]},
    "bench": {"size": ["long", "short"], "support": [("four", "legs"), ("two", "panel legs")],
              "adj": ["thin", "thick"], "mat": ["wooden", "metal", "stone"],
              "detail": ["a backrest", "no backrest"]},
    "shelf": {"size": ["tall", "short"], "support": [("two", "side panels"), ("four", "corner posts")],
              "adj": ["thin", "thick"], "mat": ["wooden", "metal"],
              "detail": [f"{w} shelves" for w in ("two", "three", "four", "five", "six")]},
    "cabinet": {"size": ["tall", "short"], "support": [("four", "legs"), ("a", "plinth")],
                "adj": ["thin", "thick"], "mat": ["wooden", "metal"],
                "detail": ["one door", "two doors", "two drawers", "four drawers"]},
    "mug": {"size": ["tall", "short"], "support": [("a", "round handle"), ("a", "square handle")],
            "adj": ["thin", "thick"], "mat": ["ceramic", "glass", "metal"],
            "detail": ["straight sides", "a flared rim", "a tapered body"]},
    "bowl": {"size": ["large", "small"], "support": [("a", "foot ring"), ("a", "flat bottom")],
             "adj": ["narrow", "wide"], "mat": ["ceramic", "wooden", "glass"],
             "detail": [f"a {b} body and a {r} rim" for b in ("deep", "shallow") for r in ("rolled", "plain")]},
    "plate": {"size": ["large", "small"], "support": [("a", "flat base"), ("a", "foot ring")],
              "adj": ["narrow", "wide"], "mat": ["ceramic", "glass", "metal"],
              "detail": ["a raised rim", "a flat rim", "a rolled rim"]},
    "bottle": {"size": ["tall", "short"], "support": [("a", "narrow neck"), ("a", "wide neck")],
               "adj": ["long", "short"], "mat": ["glass", "plastic", "metal"],
               "detail": [f"a {s} shoulder and {c}" for s in ("round", "sloped") for c in ("a cap", "no cap")]},
    "vase": {"size": ["tall", "short"], "support": [("a", "narrow neck"), ("a", "wide mouth")],
             "adj": ["long", "short"], "mat": ["ceramic", "glass"],
             "detail": [f"{b} and a {l} lip" for b in ("a round belly", "a slim body") for l in ("flared", "plain")]},
    "jar": {"size": ["tall", "short"], "support": [("a", "lid"), ("a", "screw cap")],
            "adj": ["flat", "domed"], "mat": ["glass", "ceramic", "plastic"],
            "detail": ["straight sides", "rounded sides"]},
    "floor lamp": {"size": ["tall", "short"], "support": [("a", "round base"), ("a", "tripod base")],
                   "adj": ["narrow", "wide"], "mat": ["metal", "wooden"],
                   "detail": ["a conical shade", "a drum shade", "a globe shade"]},
    "desk lamp": {"size": ["tall", "short"], "support": [("a", "round base"), ("a", "square base")],
                  "adj": ["narrow", "wide"], "mat": ["metal", "plastic"],
                  "detail": [f"a {a} arm and a {s} shade" for a in ("straight", "bent") for s in ("conical", "dome")]},
}


def _legs(xs, ys, z0, z1, r):
    return [cylinder(r, z0, z1, (x, y)) for x in xs for y in ys]


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


# ----------------------------------------------------------------------------------------------
# one builder per category: (rng) -> (params, parts, attrs)
# ----------------------------------------------------------------------------------------------
def _chair(rng):
    p = dict(seat_h=_u(rng, .40, .65), seat_w=_u(rng, .40, .55), seat_d=_u(rng, .38, .50),
             leg_r=_u(rng, .012, .035), pedestal=bool(rng.random() < .25), back_h=_u(rng, .2, .55),
             slatted=bool(rng.random() < .5), arms=bool(rng.random() < .3), mat=int(rng.integers(3)))
    w, d, h, t = p["seat_w"], p["seat_d"], p["seat_h"], 0.04
    parts = [box((0, 0, h - t / 2), (w, d, t))]
    if p["pedestal"]:
        parts += [cylinder(p["leg_r"] * 1.5, 0.03, h - t), cylinder(.24, 0, .03)]
    else:
        parts += _legs((-w / 2 + .03, w / 2 - .03), (-d / 2 + .03, d / 2 - .03), 0, h - t, p["leg_r"])
    bh = p["back_h"]
    if p["slatted"]:
        parts += [box((x, d / 2 - .02, h + bh / 2), (.03, .03, bh)) for x in (-w / 2 + .015, w / 2 - .015)]
        parts += [box((0, d / 2 - .02, h + bh * f), (w, .025, .04)) for f in (.35, .65, .95)]
    else:
        parts.append(box((0, d / 2 - .02, h + bh / 2), (w, .03, bh)))
    if p["arms"]:
        parts += [box((x, 0, h + .22), (.04, d, .03)) for x in (-w / 2, w / 2)]
        parts += [box((x, -d / 2 + .03, h + .11), (.03, .03, .22)) for x in (-w / 2, w / 2)]
    attrs = dict(size="tall" if h > .52 else "low", support=1 if p["pedestal"] else 0,
                 adj="thin" if p["leg_r"] < .022 else "thick", mat=p["mat"],
                 detail=("a {} {} backrest and {}".format("high" if bh > .38 else "low",
                                                          "slatted" if p["slatted"] else "solid",
                                                          "armrests" if p["arms"] else "no armrests")))
    return p, parts, attrs


def _stool(rng):
    p = dict(seat_h=_u(rng, .40, .80), seat_r=_u(rng, .14, .22), round=bool(rng.random() < .5),
             legs=int(rng.choice([3, 4])), leg_r=_u(rng, .012, .03), footrest=bool(rng.random() < .4),
             mat=int(rng.integers(2)))
    h, r, t = p["seat_h"], p["seat_r"], .04
    parts = [cylinder(r, h - t, h)] if p["round"] else [box((0, 0, h - t / 2), (2 * r, 2 * r, t))]
    ang = np.arange(p["legs"]) * 2 * np.pi / p["legs"] + np.pi / 4
    foot = []
    for a in ang:
        top = (0.75 * r * np.cos(a), 0.75 * r * np.sin(a), h - t)
        bottom = (1.1 * r * np.cos(a), 1.1 * r * np.sin(a), 0)
        parts.append(tube(bottom, top, p["leg_r"]))
        foot.append(np.add(bottom, np.multiply(np.subtract(top, bottom), .35)))
    if p["footrest"]:
        parts.append(torus(float(np.hypot(*foot[0][:2])), .012, (0, 0, foot[0][2])))
    attrs = dict(size="tall" if h > .6 else "low", support=0 if p["legs"] == 3 else 1,
                 adj="thin" if p["leg_r"] < .02 else "thick", mat=p["mat"],
                 detail=("a round seat" if p["round"] else "a square seat")
                 + (" and a footrest ring" if p["footrest"] else " and no footrest"))
    return p, parts, attrs


def _table(rng):
    kind = int(rng.choice(3, p=[.45, .3, .25]))  # 0 dining, 1 side table, 2 low coffee table
    if kind == 0:
        w, d, h = _u(rng, 1.0, 1.8), _u(rng, .7, 1.0), _u(rng, .70, .78)
    elif kind == 1:
        w = _u(rng, .38, .6)
        d, h = w * _u(rng, .9, 1.0), _u(rng, .42, .65)
    else:
        w, d, h = _u(rng, .9, 1.4), _u(rng, .45, .7), _u(rng, .35, .45)
    shape = int(rng.choice(3))  # 0 round, 1 square, 2 rectangular
    if shape < 2:
        d = w = (w + d) / 2 if shape == 1 or kind == 1 else min(w, 1.2)
    p = dict(kind=kind, width=w, depth=d, height=h, shape=shape, leg_r=_u(rng, .015, .045),
             pedestal=bool(rng.random() < .25), lower_shelf=bool(shape == 2 and rng.random() < .4),
             top_t=_u(rng, .02, .05), mat=int(rng.integers(3)))
    t = p["top_t"]
    parts = [cylinder(w / 2, h - t, h)] if shape == 0 else [box((0, 0, h - t / 2), (w, d, t))]
    if p["pedestal"]:
        parts += [cylinder(p["leg_r"] * 2, .03, h - t), cylinder(min(w, d) * .3, 0, .03)]
    else:
        inset = .06 + (w * .15 if shape == 0 else 0)
        parts += _legs((-w / 2 + inset, w / 2 - inset), (-d / 2 + inset, d / 2 - inset), 0, h - t, p["leg_r"])
    if p["lower_shelf"]:
        parts.append(box((0, 0, h * .3), (w * .85, d * .85, .02)))
    attrs = dict(size="large" if w > .8 else "small", support=1 if p["pedestal"] else 0,
                 adj="thin" if p["leg_r"] < .028 else "thick", mat=p["mat"],
                 detail=["a round top", "a square top", "a rectangular top"][shape]
                 + (" and a lower shelf" if p["lower_shelf"] else " and no lower shelf"))
    return p, parts, attrs


def _bench(rng):
    p = dict(length=_u(rng, 1.0, 1.8), depth=_u(rng, .3, .45), height=_u(rng, .38, .48),
             panels=bool(rng.random() < .4), leg_r=_u(rng, .015, .04), back=bool(rng.random() < .4),
             mat=int(rng.integers(3)))
    L, d, h, t = p["length"], p["depth"], p["height"], .04
    parts = [box((0, 0, h - t / 2), (L, d, t))]
    if p["panels"]:
        parts += [box((x, 0, (h - t) / 2), (p["leg_r"] * 2, d * .9, h - t)) for x in (-L / 2 + .08, L / 2 - .08)]
    else:
        parts += _legs((-L / 2 + .06, L / 2 - .06), (-d / 2 + .04, d / 2 - .04), 0, h - t, p["leg_r"])
    if p["back"]:
        parts.append(box((0, d / 2 - .02, h + .2), (L, .03, .3)))
    attrs = dict(size="long" if L > 1.4 else "short", support=1 if p["panels"] else 0,
                 adj="thin" if p["leg_r"] < .027 else "thick", mat=p["mat"],
                 detail="a backrest" if p["back"] else "no backrest")
    return p, parts, attrs


def _shelf(rng):
    p = dict(width=_u(rng, .6, 1.2), depth=_u(rng, .25, .4), height=_u(rng, .7, 2.0),
             boards=int(rng.integers(2, 7)), posts=bool(rng.random() < .4), board_t=_u(rng, .015, .04),
             mat=int(rng.integers(2)))
    w, d, h, t = p["width"], p["depth"], p["height"], p["board_t"]
    parts = [box((0, 0, .05 + (h - .1) * i / (p["boards"] - 1)), (w, d, t)) for i in range(p["boards"])]
    if p["posts"]:
        parts += [box((x, y, h / 2), (.03, .03, h)) for x in (-w / 2, w / 2) for y in (-d / 2, d / 2)]
    else:
        parts += [box((x, 0, h / 2), (t, d, h)) for x in (-w / 2 - t / 2, w / 2 + t / 2)]
    words = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
    attrs = dict(size="tall" if h > 1.3 else "short", support=1 if p["posts"] else 0,
                 adj="thin" if t < .027 else "thick", mat=p["mat"], detail=f"{words[p['boards']]} shelves")
    return p, parts, attrs


def _cabinet(rng):
    p = dict(width=_u(rng, .4, 1.2), depth=_u(rng, .35, .6), height=_u(rng, .5, 1.8),
             plinth=bool(rng.random() < .5), leg_r=_u(rng, .015, .04), front=int(rng.integers(4)),
             mat=int(rng.integers(2)))
    w, d, h = p["width"], p["depth"], p["height"]
    base = .1
    parts = [box((0, 0, base + (h - base) / 2), (w, d, h - base))]
    if p["plinth"]:
        parts.append(box((0, .02, base / 2), (w * .95, d * .9, base)))
    else:
        parts += _legs((-w / 2 + .04, w / 2 - .04), (-d / 2 + .04, d / 2 - .04), 0, base, p["leg_r"])
    fh = h - base
    if p["front"] == 0:
        doors = [(0, w * .95, fh * .95, base + fh / 2)]
    elif p["front"] == 1:
        doors = [(x, w * .46, fh * .95, base + fh / 2) for x in (-w / 4, w / 4)]
    else:
        k = 2 if p["front"] == 2 else 4
        doors = [(0, w * .95, fh / k * .9, base + fh * (i + .5) / k) for i in range(k)]
    for x, dw, dh, z in doors:
        parts.append(box((x, -d / 2 - .01, z), (dw, .02, dh)))
        parts.append(box((x + (dw * .35 if p["front"] < 2 else 0), -d / 2 - .03, z), (.02, .02, .08)))
    attrs = dict(size="tall" if h > 1.1 else "short", support=1 if p["plinth"] else 0,
                 adj="thin" if p["leg_r"] < .027 else "thick", mat=p["mat"],
                 detail=["one door", "two doors", "two drawers", "four drawers"][p["front"]])
    return p, parts, attrs


def _mug(rng):
    p = dict(radius=_u(rng, .035, .05), height=_u(rng, .07, .13), profile=int(rng.integers(3)),
             square_handle=bool(rng.random() < .4), handle_r=_u(rng, .005, .012), wall=.004,
             mat=int(rng.integers(3)))
    r, h, wl = p["radius"], p["height"], p["wall"]
    top = r * (1.2 if p["profile"] == 1 else (.8 if p["profile"] == 2 else 1.0))
    parts = [revolve([0, r, top, top - wl, r - wl, 0], [0, 0, h, h, wl, wl])]
    if p["square_handle"]:
        hr, x0 = p["handle_r"], r
        parts += [tube((x0, 0, h * .8), (x0 + .035, 0, h * .8), hr), tube((x0, 0, h * .25), (x0 + .035, 0, h * .25), hr),
                  tube((x0 + .035, 0, h * .25), (x0 + .035, 0, h * .8), hr)]
    else:
        parts.append(torus(h * .3, p["handle_r"], ((r + top) / 2, 0, h * .52), normal=(0, 1, 0),
                           arc=np.pi, start=-np.pi / 2))
    attrs = dict(size="tall" if h / r > 2.3 else "short", support=1 if p["square_handle"] else 0,
                 adj="thin" if p["handle_r"] < .0085 else "thick", mat=p["mat"],
                 detail=["straight sides", "a flared rim", "a tapered body"][p["profile"]])
    return p, parts, attrs


def _bowl(rng):
    p = dict(radius=_u(rng, .06, .16), depth=_u(rng, .25, .8), foot=bool(rng.random() < .5),
             foot_r=_u(rng, .25, .55), rolled=bool(rng.random() < .4), mat=int(rng.integers(3)))
    r, k = p["radius"], p["depth"]
    a = np.linspace(0, np.pi / 2, 12)
    fr = r * p["foot_r"]
    base_z = .012 if p["foot"] else 0
    xs = r * np.sin(a) * (1 - 0.0) + 0
    zs = base_z + r * k * (1 - np.cos(a))
    xs = np.maximum(xs, np.linspace(fr, r, 12) * (a > 0))
    outer_r, outer_z = np.concatenate([[0], xs]), np.concatenate([[base_z], zs])
    parts = [revolve(outer_r, outer_z), revolve(outer_r[::-1] * .95, outer_z[::-1] + .005)]
    if p["foot"]:
        parts.append(cylinder(fr, 0, base_z, caps=False))
    if p["rolled"]:
        parts.append(torus(r, .006, (0, 0, zs[-1])))
    attrs = dict(size="large" if r > .11 else "small", support=0 if p["foot"] else 1,
                 adj="narrow" if p["foot_r"] < .4 else "wide", mat=p["mat"],
                 detail=("a deep body" if k > .5 else "a shallow body") + (" and a rolled rim" if p["rolled"] else " and a plain rim"))
    return p, parts, attrs


def _plate(rng):
    p = dict(radius=_u(rng, .09, .16), rim=int(rng.integers(3)), foot=bool(rng.random() < .4),
             base_r=_u(rng, .35, .7), rim_h=_u(rng, .008, .03), mat=int(rng.integers(3)))
    r, br = p["radius"], p["radius"] * p["base_r"]
    z0 = .006 if p["foot"] else 0
    rim_z = z0 + (p["rim_h"] if p["rim"] != 1 else .004)
    parts = [revolve([0, br, r, r * .97, br * .97, 0], [z0, z0, rim_z, rim_z + .003, z0 + .004, z0 + .004])]
    if p["foot"]:
        parts.append(cylinder(br * .8, 0, z0, caps=False))
    if p["rim"] == 2:
        parts.append(torus(r, .005, (0, 0, rim_z)))
    attrs = dict(size="large" if r > .125 else "small", support=1 if p["foot"] else 0,
                 adj="narrow" if p["base_r"] < .52 else "wide", mat=p["mat"],
                 detail=["a raised rim", "a flat rim", "a rolled rim"][p["rim"]])
    return p, parts, attrs


def _bottle(rng):
    p = dict(radius=_u(rng, .03, .05), body_h=_u(rng, .12, .28), neck_r=_u(rng, .009, .025),
             neck_h=_u(rng, .03, .09), shoulder_h=_u(rng, .02, .07), round_shoulder=bool(rng.random() < .5),
             cap=bool(rng.random() < .5), mat=int(rng.integers(3)))
    r, bh, nr, nh, sh = p["radius"], p["body_h"], p["neck_r"], p["neck_h"], p["shoulder_h"]
    if p["round_shoulder"]:
        a = np.linspace(0, np.pi / 2, 8)
        sr, sz = nr + (r - nr) * np.cos(a), bh + sh * np.sin(a)
    else:
        sr, sz = np.array([r, nr]), np.array([bh, bh + sh])
    prof_r = np.concatenate([[0, r], sr, [nr, 0]])
    prof_z = np.concatenate([[0, 0], sz, [bh + sh + nh, bh + sh + nh]])
    parts = [revolve(prof_r, prof_z)]
    if p["cap"]:
        parts.append(cylinder(nr * 1.25, bh + sh + nh - .005, bh + sh + nh + .015))
    total_h = bh + sh + nh
    attrs = dict(size="tall" if total_h / r > 5.5 else "short", support=0 if nr < .017 else 1,
                 adj="long" if nh > .06 else "short", mat=p["mat"],
                 detail="a {} shoulder and {}".format("round" if p["round_shoulder"] else "sloped",
                                                       "a cap" if p["cap"] else "no cap"))
    return p, parts, attrs


def _vase(rng):
    p = dict(height=_u(rng, .18, .45), base_r=_u(rng, .03, .06), belly=_u(rng, .35, 1.0),
             neck_r=_u(rng, .012, .05), neck_h=_u(rng, .1, .35), lip=bool(rng.random() < .4),
             mat=int(rng.integers(2)))
    h, br = p["height"], p["base_r"]
    belly_r = br * (1 + 1.2 * p["belly"])
    nr = p["neck_r"]
    z_neck = h * (1 - p["neck_h"])
    zs = np.array([0, 0, h * .1, h * .4, z_neck * .9, z_neck, h])
    rs = np.array([0, br, br * 1.1, belly_r, (belly_r + nr) / 2, nr, nr])
    if p["lip"]:
        zs, rs = np.append(zs, h + .01), np.append(rs, nr * 1.5)
    parts = [revolve(rs, zs), revolve(rs[::-1][:3] * .9, zs[::-1][:3])]
    attrs = dict(size="tall" if h > .3 else "short", support=0 if nr < .028 else 1,
                 adj="long" if p["neck_h"] > .22 else "short", mat=p["mat"],
                 detail=("a round belly" if p["belly"] > .6 else "a slim body") + (" and a flared lip" if p["lip"] else " and a plain lip"))
    return p, parts, attrs


def _jar(rng):
    p = dict(radius=_u(rng, .045, .09), height=_u(rng, .07, .2), rounded=bool(rng.random() < .5),
             screw=bool(rng.random() < .5), domed=bool(rng.random() < .5), mat=int(rng.integers(3)))
    r, h = p["radius"], p["height"]
    if p["rounded"]:
        a = np.linspace(-np.pi / 2, np.pi / 2, 10)
        prof_r = np.concatenate([[0], r * (.8 + .2 * np.cos(a)), [r * .8, 0]])
        prof_z = np.concatenate([[0], h / 2 + h / 2 * np.sin(a), [h, h]])
    else:
        prof_r, prof_z = np.array([0, r, r, 0]), np.array([0, 0, h, h])
    parts = [revolve(prof_r, prof_z)]
    lid_r = r * (.75 if p["screw"] else 1.04)
    lid_h = .03 if p["screw"] else .012
    parts.append(cylinder(lid_r, h, h + lid_h))
    if p["domed"]:
        parts.append(revolve(lid_r * np.cos(np.linspace(0, np.pi / 2, 8)),
                            h + lid_h + .35 * lid_r * np.sin(np.linspace(0, np.pi / 2, 8))))
    attrs = dict(size="tall" if h / r > 1.8 else "short", support=1 if p["screw"] else 0,
                 adj="domed" if p["domed"] else "flat", mat=p["mat"],
                 detail="rounded sides" if p["rounded"] else "straight sides")
    return p, parts, attrs


def _shade(kind, z_bottom, r_bottom, r_top, height, center_xy=(0.0, 0.0)):
    cx, cy = center_xy
    if kind == 2:  # globe
        return sphere(height / 2, (cx, cy, z_bottom + height / 2))
    if kind == 1:  # drum
        return revolve([r_bottom, r_bottom], [z_bottom, z_bottom + height], (cx, cy, 0))
    return revolve([r_bottom, r_top], [z_bottom, z_bottom + height], (cx, cy, 0))


def _floor_lamp(rng):
    p = dict(height=_u(rng, 1.0, 1.9), tripod=bool(rng.random() < .35), base_r=_u(rng, .12, .2),
             shade=int(rng.integers(3)), shade_r=_u(rng, .12, .26), shade_h=_u(rng, .18, .35),
             mat=int(rng.integers(2)))
    h, sr, shh = p["height"], p["shade_r"], p["shade_h"]
    parts = [cylinder(.012, .02, h - shh * .5)]
    if p["tripod"]:
        parts += [tube((p["base_r"] * 1.5 * np.cos(a), p["base_r"] * 1.5 * np.sin(a), 0), (0, 0, h * .35), .012)
                  for a in (0, 2 * np.pi / 3, 4 * np.pi / 3)]
    else:
        parts.append(cylinder(p["base_r"], 0, .025))
    parts.append(_shade(p["shade"], h - shh, sr, sr * .6, shh))
    attrs = dict(size="tall" if h > 1.45 else "short", support=1 if p["tripod"] else 0,
                 adj="narrow" if p["base_r"] < .16 else "wide", mat=p["mat"],
                 detail=["a conical shade", "a drum shade", "a globe shade"][p["shade"]])
    return p, parts, attrs


def _desk_lamp(rng):
    p = dict(height=_u(rng, .3, .7), square=bool(rng.random() < .4), base_r=_u(rng, .06, .12),
             bent=bool(rng.random() < .5), dome=bool(rng.random() < .5), shade_r=_u(rng, .05, .12),
             reach=_u(rng, .1, .3), mat=int(rng.integers(2)))
    h, br, sr = p["height"], p["base_r"], p["shade_r"]
    parts = [box((0, 0, .0125), (2 * br, 2 * br, .025)) if p["square"] else cylinder(br, 0, .025)]
    if p["bent"]:
        elbow = (-.05, 0, h * .6)
        top = (p["reach"], 0, h)
        parts += [tube((0, 0, .025), elbow, .01), tube(elbow, top, .01)]
    else:
        top = (p["reach"] * .5, 0, h)
        parts.append(tube((0, 0, .025), top, .01))
    shade_h = sr * .9
    if p["dome"]:
        zone = sphere(sr, (0, 0, 0), z_from=0.0, z_to=1.0)
        cx, cz = top[0] + sr * .5, top[2] - shade_h * .6

        def sample(k, rng_, zone=zone):
            pts = zone.sample(k, rng_)
            return pts + np.array([cx, 0, cz])
        parts.append(Part(zone.area, sample))
    else:
        parts.append(_shade(0, top[2] - shade_h, sr, sr * .3, shade_h, (top[0] + sr * .5, 0)))
    attrs = dict(size="tall" if h > .5 else "short", support=1 if p["square"] else 0,
                 adj="narrow" if br < .09 else "wide", mat=p["mat"],
                 detail="a {} arm and a {} shade".format("bent" if p["bent"] else "straight",
                                                          "dome" if p["dome"] else "conical"))
    return p, parts, attrs


BUILDERS = {"chair": _chair, "stool": _stool, "table": _table, "bench": _bench, "shelf": _shelf,
            "cabinet": _cabinet, "mug": _mug, "bowl": _bowl, "plate": _plate, "bottle": _bottle,
            "vase": _vase, "jar": _jar, "floor lamp": _floor_lamp, "desk lamp": _desk_lamp}


def category_of(index: int) -> str:
    """Category of object ``index`` (round-robin over the categories, so any prefix is balanced)."""
    return CATEGORIES[index % len(CATEGORIES)]


def make_object(index: int, seed: int, n_points: int = N_POINTS) -> dict:
    """Object ``index`` of the world with ``seed``: its category, true parameters, attributes and cloud.

    Each object has its own generator ``default_rng([seed, index])``, so any object regenerates alone.
    Returns a dict with ``label``, ``super``, ``params`` (dict), ``attrs`` (dict), ``cloud`` (n_points x 3,
    normalised: centroid at 0, farthest point at distance 1), ``scale`` (metres per unit), ``extent_m``
    (bounding-box size in metres, x y z).
    """
    label = category_of(index)
    rng = np.random.default_rng([seed, index])
    params, parts, attrs = BUILDERS[label](rng)
    raw = sample_surface(parts, n_points, rng)
    cloud, _, scale = normalise_cloud(raw)
    attrs = dict(attrs)
    attrs["mat"] = DOMAINS[label]["mat"][attrs["mat"]]
    attrs["support"] = DOMAINS[label]["support"][attrs["support"]]
    return {"label": label, "super": SUPER[label], "params": params, "attrs": attrs, "cloud": cloud,
            "scale": scale, "extent_m": raw.max(0) - raw.min(0)}
