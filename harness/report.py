"""Tables and plots of an evaluation: only drawing here, every number comes from harness.metrics."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.table import Table  # noqa: E402

from harness.metrics import non_decreasing_hull  # noqa: E402

POINT_ROUTERS = ("llm", "oracle", "random", "random-draw")
#: Not a router: drawn as the bound every hull lies under.
FRONTIER = "oracle-frontier"


def delta_text(r) -> str:  # noqa: ANN001 - a row of aiq.csv
    """``+0.0123 [+0.004,+0.020] ▲``: ΔAIQ against the zero router with its paired interval."""
    if not hasattr(r, "d_aiq") or pd.isna(r.d_aiq):
        return ""
    text = f"{r.d_aiq:+.4f}"
    if not pd.isna(r.d_lo):
        text += f" [{r.d_lo:+.3f},{r.d_hi:+.3f}]" + (" ▲" if r.d_lo > 0 else " ▼" if r.d_hi < 0 else "  ")
    return text


def hull_curve(hull, c_end: float, per_segment: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """R̃ sampled densely from the first vertex to ``c_end``: straight hull edges bend on a log axis."""
    knots = np.append(hull.cost, max(c_end, hull.c_max))
    lo = np.maximum(knots[:-1], 1e-12)
    xs = np.concatenate([np.geomspace(a, max(b, a), per_segment) for a, b in zip(lo, knots[1:])])
    return xs, hull(xs)


def best_configs(aiq: pd.DataFrame) -> pd.DataFrame:
    """Per task family and router, the setting with the highest AIQ."""
    ranked = aiq.sort_values("aiq", ascending=False, kind="stable")
    return ranked.drop_duplicates(["task_family", "router"]).sort_values(["task_family", "aiq"], ascending=[True, False])


def aiq_table(aiq: pd.DataFrame, points: pd.DataFrame, family: str, all_configs: bool = False) -> Table:
    """One family's AIQ per router (best setting unless ``all_configs``), with the top point of its curve."""
    rows = aiq[aiq["task_family"] == family]
    if not all_configs:  # every single model, and each other router at its best setting
        rows = pd.concat([rows[rows["router"] == "llm"], best_configs(rows[rows["router"] != "llm"])])
    rows = rows.sort_values("aiq", ascending=False, kind="stable")
    pts = points[points["task_family"] == family]
    top = pts.sort_values("quality", kind="stable").drop_duplicates(["router", "curve"], keep="last").set_index(["router", "curve"])
    table = Table(title=f"{family}: AIQ (95% bootstrap interval)", title_justify="left")
    columns = ("router", "left"), ("config", "left"), ("AIQ", "right"), ("interval", "right"), ("ΔAIQ vs zero [95%]", "right"), ("best quality", "right"), ("at $/query", "right")
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.caption = "▲ / ▼: the paired ΔAIQ interval lies above / below zero (better / worse than mixing the LLMs)"
    table.caption_justify = "left"
    for r in rows.itertuples():
        interval = "" if np.isnan(r.aiq_lo) else f"{r.aiq_lo:.4f}–{r.aiq_hi:.4f}"
        q = c = ""
        if (r.router, r.config) in top.index:
            p = top.loc[(r.router, r.config)]
            q, c = f"{p.quality:.4f}", f"{p.cost:.3g}"
        table.add_row(r.router, r.config or "-", f"{r.aiq:.4f}", interval, delta_text(r), q, c)
    return table


def plot_family(points: pd.DataFrame, aiq: pd.DataFrame, family: str, path: Path) -> Path:
    """The cost–quality plane of one family: LLMs, oracle, random, zero router, each router's best hull."""
    pts = points[points["task_family"] == family]
    fig, ax = plt.subplots(figsize=(9, 6))
    positive = pts.loc[pts["cost"] > 0, "cost"]
    floor = positive.min() / 2 if len(positive) else 1e-6
    x = lambda c: np.maximum(np.asarray(c, dtype=float), floor)  # noqa: E731  (log axis: show $0 at the floor)

    llm = pts[pts["router"] == "llm"]
    ax.scatter(x(llm["cost"]), llm["quality"], color="black", s=30, zorder=3, label="single LLMs")
    for r in llm.itertuples():
        ax.annotate(r.config.split("/")[-1], (x(r.cost), r.quality), fontsize=7, xytext=(4, 2), textcoords="offset points")
    c_end = float(pts["cost"].max())
    zero = non_decreasing_hull(llm["cost"].to_numpy(), llm["quality"].to_numpy())
    ax.plot(*hull_curve(zero, c_end), "k--", lw=1.2, label="zero router (hull of LLMs)")
    for name, marker, color in (("oracle", "*", "gold"), ("random", "D", "grey")):
        p = pts[pts["router"] == name]
        if len(p):
            ax.scatter(x(p["cost"]), p["quality"], marker=marker, s=140 if marker == "*" else 50, color=color, edgecolor="black", zorder=4, label=name)
    frontier = pts[pts["router"] == FRONTIER]
    if len(frontier):
        bound = non_decreasing_hull(frontier["cost"].to_numpy(), frontier["quality"].to_numpy())
        fx, fy = hull_curve(bound, c_end)
        ax.plot(x(fx), fy, ":", color="goldenrod", lw=1.4, label="oracle frontier (best possible)")
    draws = pts[pts["router"] == "random-draw"]
    if len(draws):
        ax.scatter(x(draws["cost"]), draws["quality"], s=8, color="grey", alpha=0.5, label="random draws")

    best = best_configs(aiq[aiq["task_family"] == family])
    colors = plt.get_cmap("tab10")
    for i, r in enumerate(best[~best["router"].isin((*POINT_ROUTERS, FRONTIER, "zero"))].itertuples()):
        curve = pts[(pts["router"] == r.router) & (pts["curve"] == r.config)]
        hull = non_decreasing_hull(curve["cost"].to_numpy(), curve["quality"].to_numpy())
        color = colors(i % 10)
        ax.scatter(x(curve["cost"]), curve["quality"], s=10, color=color, alpha=0.4)
        hx, hy = hull_curve(hull, c_end)
        mark = " ▲" if getattr(r, "d_lo", 0) > 0 else ""
        ax.plot(x(hx), hy, "-", color=color, lw=1.6, label=f"{r.router} {r.config} (AIQ {r.aiq:.3f}{mark})")

    ax.set_xscale("log")
    ax.set_xlabel("mean cost per query ($, log scale)")
    ax.set_ylabel("mean quality")
    ax.set_title(f"{family}: cost–quality")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
