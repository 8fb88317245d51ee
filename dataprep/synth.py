"""A synthetic image-text corpus for demos and tests: coloured shapes on plain backgrounds, described in words.

Each image shows 1-3 shapes (a shape, a colour, a size and a position each; identical shapes are
counted: "two small red stars") on a white, black or grey background. Every caption is determined by
what is drawn and phrased from templates with synonyms, so a tiny model can learn the mapping in a few
CPU minutes at 64 px. Eval images differ from each other in their colour-shape content, so retrieval
R@1 measures something. Everything is drawn with PIL, deterministically from the seed.

Train rows hold a list of 3 phrasings (the trainer draws one per visit); eval rows a list of 5.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageDraw

from dataprep.job import Job
from dataprep.storage import join, open_store
from dataprep.writer import ShardOptions, write_dataset

logger = logging.getLogger(__name__)

SOURCE = "synth"
TRAIN_PHRASINGS = 3
EVAL_PHRASINGS = 5
_SUPERSAMPLE = 2  # draw at twice the size, then downsample: smooth edges
_JPEG_QUALITY = 90

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 225),
    "yellow": (245, 215, 20),
    "purple": (140, 40, 175),
    "orange": (245, 130, 20),
    "pink": (250, 125, 195),
    "brown": (135, 80, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245), "black": (15, 15, 15), "grey": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
POSITIONS: dict[str, tuple[float, float]] = {  # slot centre as a fraction of the image side
    "centre": (0.5, 0.5), "left": (0.19, 0.5), "right": (0.81, 0.5), "top": (0.5, 0.19), "bottom": (0.5, 0.81),
}
RADII = {"small": 0.10, "large": 0.16}  # fraction of the image side

SHAPE_WORDS: dict[str, list[tuple[str, str]]] = {  # (singular, plural) synonyms
    "circle": [("circle", "circles"), ("disc", "discs"), ("round dot", "round dots")],
    "square": [("square", "squares"), ("box", "boxes")],
    "triangle": [("triangle", "triangles")],
    "star": [("star", "stars")],
    "diamond": [("diamond", "diamonds")],
    "cross": [("cross", "crosses"), ("plus sign", "plus signs")],
}
SIZE_WORDS = {"small": ["small", "little", "tiny"], "large": ["large", "big"]}
POSITION_WORDS = {
    "centre": ["in the centre", "in the middle"], "left": ["on the left", "at the left"],
    "right": ["on the right", "at the right"], "top": ["at the top", "near the top"],
    "bottom": ["at the bottom", "near the bottom"],
}
COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
TEMPLATES = (  # at most 5 words around the objects: captions stay within 20 words (25 tokens)
    "{objects}",
    "{objects} on a {background} background",
    "a picture of {objects}",
    "an image of {objects} on {background}",
    "a drawing of {objects}",
    "a {background} background with {objects}",
    "{objects} drawn on {background}",
    "a scene with {objects}",
)
_MAX_GROUPS_WITH_POSITIONS = 2  # three positioned groups would not fit in 20 words


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    background: str
    shapes: tuple[Shape, ...]

    def content(self) -> tuple[tuple[str, str], ...]:
        """The colour-shape multiset: what every caption of the scene names."""
        return tuple(sorted((s.colour, s.kind) for s in self.shapes))


def sample_scene(rng: random.Random) -> Scene:
    """1-3 shapes at distinct positions; with 2-3 shapes, sometimes copies of one (to be counted)."""
    count = rng.choices((1, 2, 3), weights=(0.4, 0.35, 0.25))[0]
    positions = rng.sample(list(POSITIONS), count)
    if count > 1 and rng.random() < 0.3:
        kind, colour, size = rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(RADII))
        shapes = [Shape(kind, colour, size, p) for p in positions]
    else:
        shapes = [Shape(rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(RADII)), p) for p in positions]
    return Scene(rng.choice(list(BACKGROUNDS)), tuple(shapes))


def _outline(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon points of a shape of radius r centred at (cx, cy)."""
    def ring(points: int, radii: tuple[float, ...]) -> list[tuple[float, float]]:
        """Vertices from the top, clockwise, alternating between the given radii (stars: outer, inner)."""
        n = points * len(radii)
        angles = [-math.pi / 2 + 2 * math.pi * i / n for i in range(n)]
        return [(cx + r * radii[i % len(radii)] * math.cos(a), cy + r * radii[i % len(radii)] * math.sin(a))
                for i, a in enumerate(angles)]

    if kind == "triangle":
        return ring(3, (1.0,))
    if kind == "star":
        return ring(5, (1.0, 0.45))
    if kind == "diamond":
        return [(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)]
    if kind == "cross":
        a, b = 0.9 * r, 0.3 * r
        return [(cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b), (cx + a, cy + b),
                (cx + b, cy + b), (cx + b, cy + a), (cx - b, cy + a), (cx - b, cy + b), (cx - a, cy + b),
                (cx - a, cy - b), (cx - b, cy - b)]
    raise ValueError(f"no outline for {kind!r}")


def draw_scene(scene: Scene, size: int) -> Image.Image:
    """The scene as a size x size RGB image."""
    big = size * _SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        fx, fy = POSITIONS[shape.position]
        cx, cy, r = fx * big, fy * big, RADII[shape.size] * big
        fill = COLOURS[shape.colour]
        if shape.kind == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif shape.kind == "square":
            half = 0.8 * r
            draw.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
        else:
            draw.polygon(_outline(shape.kind, cx, cy, r), fill=fill)
    return image.resize((size, size), Image.Resampling.LANCZOS)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_scene(scene: Scene, rng: random.Random) -> str:
    """One phrasing: identical shapes are counted, groups come in a random order, synonyms vary.

    A single shape's position is named when the scene has at most two groups (captions stay short).
    """
    groups = Counter((s.kind, s.colour, s.size) for s in scene.shapes)
    positions = {(s.kind, s.colour, s.size): s.position for s in scene.shapes}
    phrases = []
    for (kind, colour, size), count in groups.items():
        singular, plural = rng.choice(SHAPE_WORDS[kind])
        phrase = f"{COUNT_WORDS[count]} {rng.choice(SIZE_WORDS[size])} {colour} {singular if count == 1 else plural}"
        if count == 1 and len(groups) <= _MAX_GROUPS_WITH_POSITIONS:
            phrase += " " + rng.choice(POSITION_WORDS[positions[kind, colour, size]])
        phrases.append(phrase)
    rng.shuffle(phrases)
    return rng.choice(TEMPLATES).format(objects=_join(phrases), background=scene.background)


def describe_distinctly(scene: Scene, rng: random.Random, count: int) -> list[str]:
    """`count` different phrasings of the scene (fewer only if the templates cannot give more)."""
    phrasings: list[str] = []
    for _ in range(count * 20):
        text = describe_scene(scene, rng)
        if text not in phrasings:
            phrasings.append(text)
            if len(phrasings) == count:
                break
    return phrasings


def _jpeg(image: Image.Image) -> bytes:
    out = BytesIO()
    image.save(out, "JPEG", quality=_JPEG_QUALITY)
    return out.getvalue()


def _row(split: str, index: int, scene: Scene, captions: list[str], size: int) -> dict:
    return {
        "image": _jpeg(draw_scene(scene, size)), "caption": captions, "sample_id": f"{SOURCE}:{split}/{index:06d}",
        "source": SOURCE, "width": size, "height": size,
    }


def eval_scenes(rng: random.Random, count: int) -> list[Scene]:
    """Scenes whose colour-shape content differs pairwise (so captions tell every eval image apart)."""
    scenes: list[Scene] = []
    contents: set[tuple[tuple[str, str], ...]] = set()
    for _ in range(count * 100):
        if len(scenes) == count:
            return scenes
        scene = sample_scene(rng)
        if scene.content() not in contents:
            contents.add(scene.content())
            scenes.append(scene)
    raise ValueError(f"cannot draw {count} eval scenes of distinct content (found {len(scenes)})")


def write_demo_corpus(out: str | Path, n_train: int, n_eval: int, seed: int = 0, size: int = 96) -> None:
    """Write OUT/train (n_train rows, 3 phrasings each) and OUT/eval (n_eval rows, 5 phrasings each) as MDS."""
    if size < 32:
        raise ValueError(f"size {size}: images smaller than 32 px leave the small shapes a few pixels wide")
    if n_train < 1 or n_eval < 0:
        raise ValueError(f"need n_train >= 1 and n_eval >= 0, got {n_train} and {n_eval}")
    settings = {"synth": {"n_train": n_train, "n_eval": n_eval, "seed": seed, "size": size}}
    job = Job.open(open_store(out), settings, overwrite=True)
    job.start()
    train_rng, eval_rng = random.Random(f"{seed}-train"), random.Random(f"{seed}-eval")
    train = (
        _row("train", i, scene, describe_distinctly(scene, train_rng, TRAIN_PHRASINGS), size)
        for i, scene in enumerate(sample_scene(train_rng) for _ in range(n_train))
    )
    write_dataset(open_store(join(str(out), "train")), train, ShardOptions(), job.fingerprint)
    scenes = eval_scenes(eval_rng, n_eval)
    evals = (_row("eval", i, s, describe_distinctly(s, eval_rng, EVAL_PHRASINGS), size) for i, s in enumerate(scenes))
    write_dataset(open_store(join(str(out), "eval")), evals, ShardOptions(), job.fingerprint)
    logger.info("%s: %d train and %d eval images of %d px", out, n_train, n_eval, size)
