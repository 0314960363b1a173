"""PIL against OpenCV for the two heaviest drawings, on a canvas as large as the app draws on.

    python benchmarks/drawing.py [--repeats 20] [--size 1066 1600]

"900 proposals": 900 box outlines with per-box opacity (0.7, the final ones 1.0), as the Proposals
view draws its top 900. "all heads x all levels": 8 x 4 x 4 = 128 sampling points with per-point
radius and opacity, as the Sampling points and Encoder views draw them. For each, the way
`dino_demo.explore.draw.pixels` draws it and the other library's best equivalent (PIL boxes are
`ImageDraw` with RGBA outlines; OpenCV has no per-shape opacity, so its boxes go on one layer per
opacity, blended once; PIL discs are `ImageDraw.ellipse`, aliased; OpenCV discs are anti-aliased,
blended per point in a small window). Prints the median time of each.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import cv2
import numpy as np
from PIL import Image, ImageDraw


def opencv_boxes(image, boxes, colors, alphas, width):
    out = image.copy()
    for level in np.unique(alphas):
        layer = out.copy()
        for box, color, alpha in zip(boxes, colors, alphas):
            if alpha == level:
                cv2.rectangle(layer, (int(box[0]), int(box[1])), (int(box[2]), int(box[3])), color, width, cv2.LINE_8)
        out = cv2.addWeighted(layer, float(level), out, 1.0 - float(level), 0.0)
    return out


def pil_points(image, points, colors, radii, alphas):
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas, "RGBA")
    for i in np.argsort(-radii, kind="stable"):
        (x, y), r, a = points[i], radii[i], alphas[i]
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(*colors[i], int(255 * a)), outline=(*colors[i], 255))
    return np.asarray(canvas)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--size", nargs=2, type=int, default=[1066, 1600], metavar=("H", "W"))
    args = parser.parse_args(argv)

    from dino_demo.explore.draw import pixels as vis

    height, width = args.size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    corners = rng.uniform(0, 1, (900, 2, 2)) * (width, height)
    boxes = np.concatenate([corners.min(1), corners.max(1)], -1)
    box_colors = vis.colormap(rng.uniform(size=900))
    box_alphas = np.where(rng.uniform(size=900) < 0.05, 1.0, 0.7)
    line = vis.line_width(image.shape)
    points = rng.uniform(0.3, 0.7, (128, 2)) * (width, height)
    radii, point_alphas = vis.point_style(rng.dirichlet(np.ones(128)), min_radius=4.4, max_radius=25)
    point_colors = [vis.palette_color(level) for level in np.tile(np.repeat(np.arange(4), 4), 8)]

    cases = {
        "900 proposals: PIL (used)": lambda: vis.draw_boxes(image, boxes, box_colors, widths=[line] * 900,
                                                            alphas=box_alphas),
        "900 proposals: OpenCV": lambda: opencv_boxes(image, boxes, box_colors, box_alphas, line),
        "all heads x all levels: OpenCV (used, anti-aliased)": lambda: vis.draw_points(
            image, points, point_colors, radii, point_alphas),
        "all heads x all levels: PIL (aliased)": lambda: pil_points(image, points, point_colors, radii, point_alphas),
    }
    print(f"canvas {width}x{height}, median of {args.repeats}")
    for name, call in cases.items():
        call()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        print(f"{name:55s} {1000 * statistics.median(times):8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
