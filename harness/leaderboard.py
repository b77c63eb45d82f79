"""The leaderboard: several evaluations' ΔAIQ against the zero router, side by side.

Each results directory (an ``evaluate --out``) is one dataset, labelled by its ``run.json`` or its
name. Per dataset, family and router the best setting is kept (by AIQ, as the tables do), so a
router with a larger grid gets no more rows than one without.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from rich.table import Table  # noqa: E402

from harness.errors import UserError  # noqa: E402
from harness.report import FRONTIER, best_configs, delta_text  # noqa: E402
from harness.results import AIQ_FILE, Results  # noqa: E402

LEADERBOARD_COLUMNS = ["dataset", "task_family", "router", "config", "aiq", "d_aiq", "d_lo", "d_hi", "p_better"]
#: Rows that are bounds or baselines, not routers to rank (random routing is far below every router
#: and would only stretch the plot's axis).
NOT_RANKED = ("zero", "oracle", FRONTIER, "llm", "random", "random-draw")


def read_results(directories: list[Path] | list[str]) -> pd.DataFrame:
    """The best setting of every router per (dataset, family), from each directory's aiq.csv
    (a path or a URI, read by :meth:`harness.results.Results.read`)."""
    frames = []
    for d in directories:
        results = Results.read(d, points=False)
        aiq = results.aiq
        if "d_aiq" not in aiq:
            raise UserError(f"{d}/{AIQ_FILE}: no d_aiq column (written by an older routerbench); rerun `routerbench evaluate --out {d}`")
        frames.append(best_configs(aiq[~aiq["router"].isin(NOT_RANKED)]).assign(dataset=results.label(d)))
    if not frames:
        raise UserError("leaderboard needs at least one results directory")
    board = pd.concat(frames, ignore_index=True)[LEADERBOARD_COLUMNS]
    return board.sort_values(["dataset", "task_family", "d_aiq"], ascending=[True, True, False], kind="stable", ignore_index=True)


def leaderboard_table(board: pd.DataFrame) -> Table:
    """Per router: in how many (dataset, family) panels its interval lies above zero, and its mean ΔAIQ."""
    table = Table(title="leaderboard: ΔAIQ against the zero router (best setting per panel)", title_justify="left")
    panels = board.groupby(["dataset", "task_family"]).ngroups
    for name, justify in (("router", "left"), ("better (interval > 0)", "right"), ("worse (< 0)", "right"), ("mean ΔAIQ", "right"), ("best panel", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    stats = board.groupby("router").agg(
        better=("d_lo", lambda s: int((s > 0).sum())), worse=("d_hi", lambda s: int((s < 0).sum())), mean=("d_aiq", "mean")
    )
    for router, r in stats.sort_values("mean", ascending=False).iterrows():
        top = board[board["router"] == router].sort_values("d_aiq", ascending=False).iloc[0]
        table.add_row(str(router), f"{int(r.better)}/{panels}", f"{int(r.worse)}/{panels}", f"{r['mean']:+.4f}", f"{top.dataset}/{top.task_family} {delta_text(top)}")
    return table


def plot_leaderboard(board: pd.DataFrame, path: Path) -> Path:
    """ΔAIQ with its interval, one row per router, one panel per (dataset, family)."""
    panels = list(board.groupby(["dataset", "task_family"], sort=True).groups)
    routers = sorted(board["router"].unique(), key=lambda r: -board.loc[board["router"] == r, "d_aiq"].mean())
    cols = min(4, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 0.35 * len(routers) * rows + 1.2 * rows), squeeze=False, sharey=True)
    y = {r: i for i, r in enumerate(routers)}
    for ax, (dataset, family) in zip(axes.ravel(), panels):
        part = board[(board["dataset"] == dataset) & (board["task_family"] == family)]
        ys = part["router"].map(y).to_numpy()
        d = part["d_aiq"].to_numpy()
        lo, hi = part["d_lo"].to_numpy(), part["d_hi"].to_numpy()
        colors = np.where(lo > 0, "tab:green", np.where(hi < 0, "tab:red", "tab:gray"))
        err = np.vstack([np.nan_to_num(d - lo), np.nan_to_num(hi - d)])
        for yi, di, e0, e1, c in zip(ys, d, err[0], err[1], colors):
            ax.errorbar(di, yi, xerr=[[e0], [e1]], fmt="o", color=c, ms=4, capsize=2)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(f"{dataset} / {family}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    axes[0, 0].set_yticks(range(len(routers)), routers)
    axes[0, 0].invert_yaxis()
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    fig.supxlabel("ΔAIQ vs the zero router (95% paired bootstrap interval; green: above 0, red: below)", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
