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


# ---------------------------------------------------------------------- routers (routers/*.py)
def route_by_willingness(performance_scores, models: list[str], model_cost: dict[str, float], willingness_to_pay: float) -> list[str]:
    """The routing rule shared by RouterBench's KNN, MLP and SVM routers: idxmax of P·λ − c_m."""
    if willingness_to_pay > 0:
        for model_name in models:
            performance_scores[model_name] = performance_scores[model_name] * willingness_to_pay - model_cost[model_name]
    return performance_scores.idxmax(axis=1).tolist()


class PortRouter:
    """Shared plumbing: the embedding cache lookup and the per-λ routing of the original classes."""

    def __init__(self, train_df, models: list[str], embeddings: dict[str, np.ndarray], model_cost: dict[str, float]) -> None:
        self.train_data = train_df.reset_index(drop=True)
        self.models = models
        self.cache = embeddings
        self.model_cost = model_cost
        self.embeddings_to_fit = [self.cache[p] for p in self.train_data["prompt"].values]

    def batch_route_prompts(self, prompts, willingness_to_pay: float) -> list[str]:
        import pandas as pd

        prompt_embedding = np.vstack([self.cache[p] for p in prompts])
        scores = pd.DataFrame(self.predict(prompt_embedding))[self.models]
        return route_by_willingness(scores, self.models, self.model_cost, willingness_to_pay)


class PortKNNRouter(PortRouter):
    def __init__(self, *args, n_neighbors: int, distance_metric: str = "cosine") -> None:
        from sklearn.neighbors import NearestNeighbors

        super().__init__(*args)
        self.knn = NearestNeighbors(n_neighbors=n_neighbors, metric=distance_metric, leaf_size=30, n_jobs=-1).fit(np.vstack(self.embeddings_to_fit))

    def predict(self, prompt_embeddings):
        import pandas as pd

        _, indices = self.knn.kneighbors(prompt_embeddings)
        indices_df = pd.DataFrame(indices)
        top_k_rows = self.train_data.iloc[indices_df.values.flatten()]
        top_k_rows = top_k_rows.assign(group=np.repeat(indices_df.index, indices_df.shape[1]))
        return top_k_rows.groupby("group")[self.models].mean()


class PortPerModelRouter(PortRouter):
    """MLP and SVM routers: one sklearn regressor per model, fitted on the rows where it has a score."""

    def __init__(self, *args, make_estimator) -> None:
        super().__init__(*args)
        self.estimators = {}
        x = np.vstack(self.embeddings_to_fit)
        for model in self.models:
            non_nan_idxs = self.train_data[model].notna()
            self.estimators[model] = make_estimator().fit(x[non_nan_idxs], self.train_data[model].values[non_nan_idxs])

    def predict(self, prompt_embeddings):
        return {model: self.estimators[model].predict(prompt_embeddings.tolist()) for model in self.models}


# ---------------------------------------------------------------------- evaluate_routers.get_results_for_all_evals
def get_results_for_eval(dataset_df, results: dict[str, list[str]], models: list[str]):
    """Chosen models → per-router (performance, total_cost), with the original's row-wise lookups."""
    dataset_df = dataset_df.copy()
    model_router_list = []
    for pay_router_name, chosen in results.items():
        dataset_df[pay_router_name] = chosen
        dataset_df[pay_router_name] = dataset_df[pay_router_name].apply(lambda name: name if name in models else None)
        dataset_df[pay_router_name + "|total_cost"] = dataset_df.apply(lambda row: row[row[pay_router_name] + "|total_cost"], axis=1)
        model_router_list.append(pay_router_name)
    dataset_df = dataset_df.rename(columns={"oracle_model_to_route_to": "oracle"})
    dataset_df["oracle|total_cost"] = dataset_df.apply(
        lambda row: row[row["oracle"] + "|total_cost"] if row["oracle"] != "no_model_correct" else 0.0, axis=1
    )
    for model_router in model_router_list + ["oracle"]:
        row_indices = np.arange(dataset_df.shape[0])
        col_indices = dataset_df.columns.get_indexer(dataset_df[model_router])
        dataset_df[model_router] = dataset_df.to_numpy()[row_indices, col_indices]
    extra_model_names = ["oracle"] + model_router_list
    extra_model_cost_names = ["oracle|total_cost"] + [r + "|total_cost" for r in model_router_list]
    dataset_df = dataset_df.drop_duplicates(subset=["sample_id"])
    llm_total_cost_names = [name + "|total_cost" for name in models]
    eval_names = dataset_df[["sample_id", "eval_name"]]
    df2 = dataset_df.melt(
        id_vars=["sample_id"],
        value_vars=models + llm_total_cost_names + extra_model_names + extra_model_cost_names,
        var_name="model_name",
        value_name="value",
    )
    df2["variable_name"] = df2["model_name"].apply(lambda name: "total_cost" if "total_cost" in name else "is_correct")
    df2["model_name"] = df2["model_name"].apply(lambda name: name if "total_cost" not in name else name.replace("|total_cost", ""))
    df3 = df2.pivot(index=["sample_id", "model_name"], columns="variable_name", values="value").reset_index()
    df3 = df3.merge(eval_names, on="sample_id", how="left")
    df3["is_correct"] = df3["is_correct"].astype(float)
    df3["total_cost"] = df3["total_cost"].astype(float)
    aggregated_df = df3.groupby(["eval_name", "model_name"]).agg({"is_correct": "mean", "total_cost": "sum"}).reset_index()
    return aggregated_df.rename(columns={"is_correct": "performance"})


# ---------------------------------------------------------------------- routers/run_cascading_router.py
def run_cascading_router(inputs_df, models: list[str], model_cost: dict[str, float], max_cost_per_response: float, evaluator_error_rate: float, performance_threshold: float) -> tuple[float, float]:
    """One (budget, error rate) setting: a Python loop over rows, one global-RNG draw per model called."""
    llms = sorted(models, key=lambda x: model_cost[x])
    total_performance = 0.0
    total_cost = 0.0
    for _, row in inputs_df.iterrows():
        curr_max_cost_per_response = max_cost_per_response
        sample_cost = 0
        last_performance = 0.0
        for llm_name in llms:
            if row[llm_name + "|total_cost"] >= curr_max_cost_per_response and sample_cost > 0:
                break
            evaluator_wrong = np.random.rand() < evaluator_error_rate
            sample_cost += row[llm_name + "|total_cost"]
            curr_max_cost_per_response -= row[llm_name + "|total_cost"]
            answer_accepted = (row[llm_name] < performance_threshold) if evaluator_wrong else (row[llm_name] >= performance_threshold)
            last_performance = row[llm_name]
            if answer_accepted:
                break
        total_performance += last_performance
        total_cost += sample_cost
    return total_performance / len(inputs_df), total_cost
