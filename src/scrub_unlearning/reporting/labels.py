"""The label-layout engine of the scatter figures: each marker's label is put on the nearest free spot around it
(rings of candidate positions), with a thin leader line when it had to move away; crowded clusters are detected so
the figure can zoom on them.

Works in display pixels on a laid-out figure (`FigureCanvasAgg.draw`), so it must run after the axes limits and
everything else that moves the axes are set."""

from __future__ import annotations

import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.path import Path as MplPath
from matplotlib.transforms import Bbox

Label = tuple[float, float, str, dict, str]
"""(x, y in data coordinates, text, text properties, leader-line colour)."""

def _overlap(a: Bbox, b: Bbox) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


# label positions tried around a marker, nearest ring first: directions (degrees) and distances (points)
_LABEL_ANGLES = (20, 160, -20, -160, 50, 130, -50, -130, 90, -90, 0, 180)
_LABEL_RADII = (6, 14, 24, 36, 50, 66, 84)
_LEADER_FROM = 10  # points: labels further away get a thin line to their marker


def _segment_hits(p0: tuple[float, float], p1: tuple[float, float], box: Bbox) -> bool:
    return bool(MplPath([p0, p1]).intersects_bbox(box, filled=True))


def _nearest_on_box(point: tuple[float, float], box: Bbox) -> tuple[float, float]:
    return (min(max(point[0], box.x0), box.x1), min(max(point[1], box.y0), box.y1))


def place_labels(fig: Figure, ax, labels: list[Label]) -> None:
    """Annotate each (x, y, text, text properties, line colour) near its marker.

    Candidate positions lie on rings around the marker (nearest first); a candidate is free when its text overlaps
    no earlier label and no marker, stays inside the axes, and its leader line crosses no other marker or label.
    The first free candidate wins, else the least bad one. Labels beyond the first rings get a thin leader line in
    the method's colour, so a label set apart from a crowded cluster still points at its own marker.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()  # runs the layout engine, so the axes sit where they will be drawn
    renderer = canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    to_px = fig.dpi / 72.0
    points = [tuple(ax.transData.transform((x, y))) for x, y, *_ in labels]
    markers = [Bbox.from_extents(px - 6, py - 6, px + 6, py + 6) for px, py in points]
    placed: list[Bbox] = []
    lines: list[tuple[tuple[float, float], tuple[float, float]]] = []
    for index, ((x, y, text, props, color), point) in enumerate(zip(labels, points, strict=True)):
        probe = ax.text(0, 0, text, fontsize=8, **props)
        extent = probe.get_window_extent(renderer)
        width, height = extent.width + 3, extent.height + 3
        probe.remove()
        best, best_cost = None, math.inf
        for radius in _LABEL_RADII:
            for angle in _LABEL_ANGLES:
                cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
                ha = "left" if cos > 0.2 else "right" if cos < -0.2 else "center"
                va = "bottom" if sin > 0.2 else "top" if sin < -0.2 else "center"
                ax_px = point[0] + radius * cos * to_px
                ay_px = point[1] + radius * sin * to_px
                x0 = ax_px if ha == "left" else ax_px - width if ha == "right" else ax_px - width / 2
                y0 = ay_px if va == "bottom" else ay_px - height if va == "top" else ay_px - height / 2
                box = Bbox.from_bounds(x0, y0, width, height)
                cost = sum(_overlap(box, other) for other in placed)
                cost += sum(_overlap(box, m) for m in markers)
                cost += 4 * (width * height - _overlap(box, inside))
                if radius >= _LEADER_FROM:
                    segment = (point, _nearest_on_box(point, box))
                    cost += 150 * sum(_segment_hits(*segment, m) for j, m in enumerate(markers) if j != index)
                    cost += 150 * sum(_segment_hits(*segment, other) for other in placed)
                cost += 150 * sum(_segment_hits(a, b, box) for a, b in lines)
                cost = round(cost, 3)  # float noise in the areas must not hide a free spot
                if cost < best_cost:
                    best, best_cost = (radius, angle, ha, va, box), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        radius, angle, ha, va, box = best
        offset = (radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle)))
        arrow = ({"arrowstyle": "-", "color": color, "linewidth": 0.8, "shrinkA": 1, "shrinkB": 5, "alpha": 0.9}
                 if radius >= _LEADER_FROM else None)
        note = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=8,
                           zorder=6, annotation_clip=False, arrowprops=arrow,
                           bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.7},
                           **props)
        note.set_in_layout(False)
        placed.append(box)
        if arrow:
            lines.append((point, _nearest_on_box(point, box)))


_CLUSTER_PX = 30.0  # estimated pixels: points closer than this (chained) form a crowded cluster
_CLUSTER_MIN = 3  # label groups a cluster needs to get its own zoom panel


def crowded_cluster(keys: list[tuple[float, float]], xlim: tuple[float, float], ylim: tuple[float, float],
                     size_px: tuple[float, float] = (640.0, 430.0)) -> list[tuple[float, float]]:
    """The largest group of points chained closer than `_CLUSTER_PX` on an axes of about `size_px`, if it has at
    least `_CLUSTER_MIN` distinct points (else [])."""
    scale_x = size_px[0] / (xlim[1] - xlim[0])
    scale_y = size_px[1] / (ylim[1] - ylim[0])
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (xi, yi) in enumerate(keys):
        for j in range(i):
            xj, yj = keys[j]
            if math.hypot((xi - xj) * scale_x, (yi - yj) * scale_y) < _CLUSTER_PX:
                parent[root(i)] = root(j)
    clusters: dict[int, list[tuple[float, float]]] = {}
    for i, key in enumerate(keys):
        clusters.setdefault(root(i), []).append(key)
    biggest = max(clusters.values(), key=len, default=[])
    return biggest if len(biggest) >= _CLUSTER_MIN else []

