"""Faithful ports of RouterBench's original algorithms (github.com/withmartian/routerbench).

They are the baseline that benchmarks time ours against and that tests check parity with, so they
keep the original's structure on purpose: the O(n³) hull with its list scans, trapezoids from each
hull's own cheapest point. Only what no longer runs was changed: ``np.trapz`` → ``np.trapezoid``, and a guard where the
original indexes an empty list (point sets of one or two points).
"""

from __future__ import annotations

import numpy as np


def calculate_area_under_curve(points: np.ndarray) -> float:
    assert points.shape[1] == 2
    return np.trapezoid(points[:, 1], points[:, 0])


def get_non_descreasing_convex_hull_of(points: np.ndarray) -> np.ndarray:
    """evaluation/AIQ.py: get_non_descreasing_convex_hull_of, as written."""
    convex_hull_points = points
    convex_hull_points = convex_hull_points[convex_hull_points[:, 0].argsort()]
    new_convex_hull_points: list = []
    for i in range(len(convex_hull_points)):
        for j in range(i, len(convex_hull_points)):
            x1, y1 = convex_hull_points[i]
            x2, y2 = convex_hull_points[j]
            for k in range(len(convex_hull_points)):
                x, y = convex_hull_points[k]
                if x1 < x < x2:
                    interpolated_y_value = np.interp(x, [x1, x2], [y1, y2])
                    if y < interpolated_y_value:
                        if x not in [mx for mx, _ in new_convex_hull_points]:
                            new_convex_hull_points.append([x, interpolated_y_value])
                        else:
                            for l in range(len(new_convex_hull_points)):  # noqa: E741
                                x_new, y_new = new_convex_hull_points[l]
                                if x_new == x and y_new < interpolated_y_value:
                                    new_convex_hull_points[l] = [x, interpolated_y_value]
                                    break
                                elif x_new == x and y_new > interpolated_y_value:
                                    new_convex_hull_points[l] = [x, y_new]
                    if y >= interpolated_y_value:
                        if x not in [mx for mx, _ in new_convex_hull_points]:
                            new_convex_hull_points.append([x, y])
                        else:
                            for l in range(len(new_convex_hull_points)):  # noqa: E741
                                x_new, y_new = new_convex_hull_points[l]
                                if x_new == x and y_new < y:
                                    new_convex_hull_points[l] = [x, y]
                                    break
                                elif x_new == x and y_new > y:
                                    new_convex_hull_points[l] = [x, y_new]
    if convex_hull_points[-1][0] not in [mx for mx, _ in new_convex_hull_points]:
        if not new_convex_hull_points or convex_hull_points[-1][1] >= new_convex_hull_points[-1][1]:
            new_convex_hull_points.append(convex_hull_points[-1])
    if convex_hull_points[0][0] not in [mx for mx, _ in new_convex_hull_points]:
        new_convex_hull_points = [convex_hull_points[0]] + new_convex_hull_points
    new_convex_hull_points = np.array(new_convex_hull_points)
    convex_hull_points = new_convex_hull_points
    convex_hull_points = convex_hull_points[convex_hull_points[:, 0].argsort()]
    points_to_remove = []
    for i in range(1, len(convex_hull_points)):
        if convex_hull_points[i][1] < convex_hull_points[i - 1][1]:
            points_to_remove.append(i)
    convex_hull_points = np.delete(convex_hull_points, points_to_remove, axis=0)
    return convex_hull_points


def calc_aiq(point_sets: list[np.ndarray]) -> list[float]:
    """evaluation/AIQ.py: calc_AIQ without its plotting: hulls extended flat to the joint maximum
    cost, area from each hull's own first point, divided by that maximum."""
    ndch_list = [get_non_descreasing_convex_hull_of(p) for p in point_sets]
    max_x_value = max(np.max(ndch[:, 0]) for ndch in ndch_list)
    ndch_list = [np.vstack((ndch, np.array([max_x_value, ndch[-1, 1]]))) for ndch in ndch_list]
    return [calculate_area_under_curve(ndch) / max_x_value for ndch in ndch_list]
