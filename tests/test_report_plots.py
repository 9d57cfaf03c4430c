"""The report's table figures (densevis.report.plots) on small hand-made tables: what each
figure shows, in which order and on which scale, and that it is legible on the page."""

from __future__ import annotations

import struct

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from densevis.analysis.baselines import BASELINES
from densevis.analysis.hypothesis_registry import UNITS
from densevis.report import plots
from densevis.report.figure_style import MIN_FONT_PT, RATIO_UNITS
from densevis.report.html import png_of
from densevis.report.localization_plot import median_ci, square_rows
from densevis.report.sanity_plot import NA_NOTE, THRESHOLD_COLOUR

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NETWORK = ["conv0", "denseblock1", "denseblock2", "denseblock4"]


def png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_MAGIC)
    return struct.unpack(">II", png[16:24])


def rendered(fig) -> bytes:
    """The PNG of ``fig``, checked to be legible on the report's page: at most 1200 px wide
    (never scaled down) and no visible text under the smallest font."""
    png = png_of(fig)
    assert png_size(png)[0] <= 1180
    small = [t.get_text() for t in fig.findobj(Text)
             if t.get_visible() and t.get_text() and t.get_fontsize() < MIN_FONT_PT]
    assert not small, f"text under {MIN_FONT_PT} pt: {small[:5]}"
    return png


def renderer_of(fig):
    """An Agg renderer of ``fig`` after drawing it (positions of legends and axes)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def top_down(ax) -> list[str]:
    """The y tick labels of ``ax`` from the top."""
    ticks = sorted(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels())),
                   key=lambda pair: -pair[0])
    return [text for _, text in ticks]


# ------------------------------------------------------------------------------------ forest
def hypothesis_rows(n_maps: int = 4, seed: int = 0) -> pd.DataFrame:
    """Replicated rows of one hypothesis: an overall row, map statistics in a mass-share and a
    ratio unit on layers listed out of network order (and vanilla's ratio first), and a
    behaviour row last."""
    rng = np.random.default_rng(seed)
    rows = [dict(method="gradcam", layer="denseblock2", statistic="overall", unit=np.nan,
                 effect=np.nan, verdict="inconclusive")]
    rows.append(dict(method="vanilla", layer="", statistic="density_ratio > 1", unit="ratio",
                     effect=np.nan, ci_low=np.nan, ci_high=np.nan, null=1.0, margin=0.25,
                     direction="greater", verdict="inconclusive"))
    layers = ["denseblock4", "conv0", "denseblock2"]
    for k in range(n_maps):
        layer = layers[k % len(layers)]
        effect = rng.normal(0.1, 0.05)
        rows.append(dict(method="gradcam", layer=layer, statistic=f"mass {k}", unit="mass share",
                         effect=effect, ci_low=effect - 0.05, ci_high=effect + 0.05, null=0.0,
                         margin=0.05, direction="greater", verdict="supported"))
    rows.append(dict(method="gradcam", layer="conv0", statistic="density_ratio > 1",
                     unit="ratio", effect=2.0, ci_low=-0.5, ci_high=np.inf, null=1.0,
                     margin=0.25, direction="greater", verdict="inconclusive"))
    rows.append(dict(method="model", layer="", statistic="logit_delta_sides > removed",
                     unit="logit", effect=3.0, ci_low=1.5, ci_high=6.0, null=0.0, margin=1.0,
                     direction="greater", verdict="supported"))
    table = pd.DataFrame(rows).assign(model="replicated", hypothesis="localizes_square",
                                      models=3, models_supported=2)
    return table


def test_forest_has_one_panel_per_unit_behaviour_first_and_layers_in_network_order():
    fig = plots.build_hypothesis_forest(hypothesis_rows(n_maps=6), "localizes_square", NETWORK)
    rendered(fig)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert [t.split(" (")[0] for t in titles] == ["unit: logit", "unit: mass share",
                                                  "unit: ratio"]
    maps = top_down(fig.axes[1])
    headings = [label for label in maps if label.startswith("gradcam /")]
    assert headings == ["gradcam / conv0", "gradcam / denseblock2", "gradcam / denseblock4"]
    assert "overall" not in " ".join(top_down(ax)[0] for ax in fig.axes)


def test_forest_draws_every_statistic_without_a_row_cap():
    rows = hypothesis_rows(n_maps=100)
    fig = plots.build_hypothesis_forest(rows, "localizes_square", NETWORK)
    labels = top_down(fig.axes[1])
    assert {f"mass {k}" for k in range(100)} <= set(labels)
    effects = [line for line in fig.axes[1].get_lines() if line.get_marker() == "o"]
    assert len(effects) == 100
    # the figure grows with its rows: 100 statistics need more room than 4
    small = plots.build_hypothesis_forest(hypothesis_rows(), "localizes_square", NETWORK)
    assert fig.get_size_inches()[1] > small.get_size_inches()[1] + 15


def test_forest_draws_ratios_on_a_log_scale_with_arrows_for_unbounded_ends():
    fig = plots.build_hypothesis_forest(hypothesis_rows(), "localizes_square", NETWORK)
    ratio = fig.axes[2]
    assert ratio.get_xscale() == "log" and fig.axes[1].get_xscale() == "linear"
    left, right = ratio.get_xlim()
    estimate = [line for line in ratio.get_lines() if line.get_marker() == "o"]
    assert [line.get_xdata()[0] for line in estimate] == [pytest.approx(3.0)]  # 2 + null 1
    arrows = {line.get_marker(): line.get_xdata()[0] for line in ratio.get_lines()
              if line.get_marker() in ("<", ">")}
    # ci_low + null = 0.5 is drawn; ci_high = inf ends in an arrow at the right edge
    assert arrows == {">": pytest.approx(right)}
    texts = [t.get_text() for t in ratio.texts]
    assert any(t.startswith("no estimate") for t in texts)  # NaN effect: said, not dropped
    assert "inconclusive 2/3" in texts


def test_forest_margin_lies_on_the_hypothesized_side():
    rows = hypothesis_rows()
    less = rows[rows["method"] == "model"].assign(statistic="logit_delta_double < 0",
                                                  direction="less", effect=-3.0, ci_low=-6.0,
                                                  ci_high=-1.5)
    fig = plots.build_hypothesis_forest(pd.concat([rows, less]), "localizes_square", NETWORK)
    logits = fig.axes[0]
    dashed = [c for c in logits.collections if c.get_linestyle()[0][1] is not None]
    margins = sorted(segment[0][0] for c in dashed for segment in c.get_segments())
    assert margins == [-1.0, 1.0]  # "greater" at +margin, "less" at -margin


def test_forest_refuses_several_models_and_has_nothing_for_an_unknown_hypothesis():
    rows = hypothesis_rows()
    assert plots.hypothesis_forest(rows, "no_such_hypothesis", NETWORK) is None
    assert plots.hypothesis_forest(rows, "localizes_square", NETWORK).startswith(PNG_MAGIC)
    mixed = pd.concat([rows, rows.assign(model="seed0")])
    with pytest.raises(ValueError, match="several models"):
        plots.hypothesis_forest(mixed, "localizes_square", NETWORK)


def test_ratio_units_are_units_of_the_hypotheses_registry():
    assert set(RATIO_UNITS) <= set(UNITS)


# ------------------------------------------------------------------------------ localization
def metrics_table(n: int = 30, seed: int = 0) -> pd.DataFrame:
    """Per-image rows of one model on 'base': labels (every third image has no square, and a
    huge value there that must not count), gradcam at three layers, vanilla, the baselines."""
    rng = np.random.default_rng(seed)
    images = np.arange(n)
    label = (images % 3 != 0).astype(float)
    frames = [pd.DataFrame({"image": images, "method": "model", "layer": "",
                            "metric": "label", "value": label})]
    maps = [("gradcam", "denseblock4", 1.5), ("gradcam", "conv0", 8.0),
            ("gradcam", "denseblock2", 4.0), ("vanilla", "", 10.0)]
    maps += [(b, layer, 1.0) for b in BASELINES for layer in ("", "conv0", "denseblock4")]
    for method, layer, centre in maps:
        for metric, values in (("density_ratio", rng.lognormal(np.log(centre), 0.5, n)),
                               ("mass_minus_area", rng.normal(0.02 * centre, 0.02, n))):
            values = np.where(label == 1, values, 1e6)
            frames.append(pd.DataFrame({"image": images, "method": method, "layer": layer,
                                        "metric": metric, "value": values}))
    table = pd.concat(frames, ignore_index=True)
    return table.assign(model="seed0", set="base", reduction="", note="")


def test_localization_uses_only_images_with_a_square():
    rows = square_rows(metrics_table(), "base", "density_ratio")
    assert set(rows["image"]) == {i for i in range(30) if i % 3}
    assert rows["value"].max() < 1e6


def test_localization_layers_are_categories_in_network_order_pixel_methods_right():
    fig = plots.build_localization_by_layer(metrics_table(), "density_ratio", NETWORK)
    rendered(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "conv0", "denseblock2", "denseblock4", "vanilla (pixels)"]
    # no line joins two categories: every line drawn in data units stays within one
    spans = [np.ptp(np.asarray(line.get_xdata(), dtype=float)) for line in ax.get_lines()
             if line.get_transform() == ax.transData and len(line.get_xdata()) > 1
             and line.get_linestyle() not in ("None", "")]
    assert len(spans) >= 4 * len(BASELINES) + 4 and max(spans) < 1.0  # bands, error bars
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [f"baseline: {b}" for b in BASELINES] == [t for t in legend if "baseline" in t]
    # the legend sits outside the axes (it covers no data)
    renderer = renderer_of(fig)
    box, frame = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert box.x0 >= frame.x1


def test_localization_scale_is_log_for_declared_ratios_only():
    table = metrics_table()
    assert plots.build_localization_by_layer(table, "density_ratio", NETWORK).axes[0] \
        .get_yscale() == "log"
    assert plots.build_localization_by_layer(table, "mass_minus_area", NETWORK).axes[0] \
        .get_yscale() == "linear"
    assert plots.build_localization_by_layer(table, "density_ratio", NETWORK, log=False) \
        .axes[0].get_yscale() == "linear"
    assert plots.localization_by_layer(table, "no_such_metric", NETWORK) is None
    assert plots.localization_by_layer(table, "density_ratio", NETWORK).startswith(PNG_MAGIC)


def test_bootstrap_ci_is_seeded_holds_the_median_and_ignores_nan():
    values = np.random.default_rng(1).lognormal(0.0, 1.0, 41)
    first = median_ci(values, ("gradcam", "conv0"), seed=3)
    assert median_ci(values, ("gradcam", "conv0"), seed=3) == first
    median, low, high = first
    assert median == np.median(values) and low < median < high
    # a 95% interval of a median of 41 values spans about ranks 14 to 27 (binomial)
    ranks = np.searchsorted(np.sort(values), [low, high]) + 1
    assert 12 <= ranks[0] <= 16 and 26 <= ranks[1] <= 30
    assert median_ci(np.append(values, np.nan), ("gradcam", "conv0"), seed=3) == first
    assert np.isnan(median_ci([np.nan], ("x",))[0])
    # few resamples: the interval depends on the seed and on the group's key
    few = np.arange(8.0)
    assert len({median_ci(few, ("a",), seed=s, resamples=40) for s in range(6)}) > 1
    assert len({median_ci(few, (k,), seed=0, resamples=40) for k in "abcdef"}) > 1


# ------------------------------------------------------------------------------------ sanity
def similarity_table() -> pd.DataFrame:
    """Sanity rows of one model: cascading (steps listed out of order), independent and data;
    vanilla's signed Spearman falls to -0.55; gradcam at conv0 is NaN at the last step."""
    rows = []
    steps = [(3, "conv0"), (1, "classifier"), (2, "denseblock2")]
    for test in ("cascading", "independent", "data"):
        for index, step in (steps if test != "data" else [(1, "shuffled_labels")]):
            for method, layer in (("vanilla", ""), ("gradcam", "conv0"),
                                  ("gradcam", "denseblock2")):
                value = {1: 0.8, 2: 0.3, 3: -0.55}[index] if method == "vanilla" else 0.4
                if method == "gradcam" and layer == "conv0" and index == 3:
                    value = np.nan
                for image in range(5):
                    rows.append(dict(test=test, step=step, step_index=index, method=method,
                                     layer=layer, image=image, metric="spearman_signed",
                                     value=value + 0.01 * image))
    return pd.DataFrame(rows).assign(model="seed0")


def test_sanity_panels_per_method_and_test_with_threshold_and_unclipped_data():
    fig = plots.build_sanity_figure(similarity_table(), "spearman_signed", 0.5, NETWORK)
    rendered(fig)
    panels = [ax for ax in fig.axes if ax.get_lines()]
    assert len(panels) == 2 * 3  # (pixel methods, gradcam) x (cascading, independent, data)
    low, high = panels[0].get_ylim()
    assert low < -0.55 and high >= 1.0
    for ax in panels:
        assert any(list(line.get_ydata()) == [0.5, 0.5] and line.get_color() == THRESHOLD_COLOUR
                   for line in ax.get_lines())
    cascading = panels[3]  # gradcam's row, first column: the step names are labelled here
    assert [t.get_text() for t in cascading.get_xticklabels()] == [
        "original", "classifier", "denseblock2", "conv0"]
    curves = [line for line in cascading.get_lines() if len(line.get_xdata()) == 4]
    assert curves and all(line.get_xdata()[0] == 0 and line.get_ydata()[0] == 1.0
                          for line in curves)
    assert any(t.get_text() == "n/a" for t in cascading.texts)
    legend = fig.legends[0]
    assert NA_NOTE in [t.get_text() for t in legend.get_texts()]
    assert all(ax.get_legend() is None for ax in fig.axes)  # the one legend is outside
    renderer = renderer_of(fig)
    box = legend.get_window_extent(renderer)
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in panels)


def test_sanity_columns_follow_the_tests_present():
    table = similarity_table()
    fig = plots.build_sanity_figure(table[table["test"] != "independent"], "spearman_signed")
    assert len([ax for ax in fig.axes if ax.get_lines()]) == 2 * 2
    assert plots.sanity_figure(table, "ssim", 0.5, NETWORK) is None
    assert plots.sanity_figure(table, "spearman_signed", 0.5, NETWORK).startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="several models"):
        plots.sanity_figure(pd.concat([table, table.assign(model="seed1")]), "spearman_signed")


# --------------------------------------------------------------------------------- behaviour
def behaviour_table() -> pd.DataFrame:
    rows = []
    for model in ("seed0", "seed1"):
        for set_name, variant in (("base", ""), ("pairs", ""), ("pairs", "sides"),
                                  ("pairs", "removed")):
            rows.append(dict(model=model, set=set_name, variant=variant, n=8, label_rate=0.5,
                             positive_rate=0.6, positive_rate_ci_low=0.3,
                             positive_rate_ci_high=0.85, logit_margin=1.5,
                             logit_margin_ci_low=0.5, logit_margin_ci_high=2.5, accuracy=0.9,
                             accuracy_ci_low=0.6, accuracy_ci_high=0.98))
    return pd.DataFrame(rows)


def test_behaviour_rows_per_set_and_edit_with_a_marker_per_model():
    fig = plots.build_behaviour_bars(behaviour_table())
    rendered(fig)
    assert top_down(fig.axes[0]) == ["base", "pairs", "pairs: sides", "pairs: removed"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["seed0", "seed1"]
    assert len(fig.axes[1].containers) == 2  # one error-bar series per model
    assert plots.behaviour_bars(behaviour_table().iloc[:0]) is None
    with pytest.raises(ValueError, match="logit_margin"):
        plots.behaviour_bars(behaviour_table().drop(columns="logit_margin"))


def test_tables_read_back_from_csv_draw_as_the_originals(tmp_path):
    """``densevis report`` reads the CSVs with pandas: a pixel method's empty layer is NaN."""
    def read_back(table, name):
        table.to_csv(tmp_path / name, index=False)
        return pd.read_csv(tmp_path / name)

    rows = read_back(hypothesis_rows(n_maps=6), "hypotheses.csv")
    assert rows["layer"].isna().any()
    fig = plots.build_hypothesis_forest(rows, "localizes_square", NETWORK)
    assert "vanilla (pixels): density_ratio > 1" in top_down(fig.axes[2])
    similarity = read_back(similarity_table(), "sanity.csv")
    fig = plots.build_sanity_figure(similarity, "spearman_signed", 0.5, NETWORK)
    assert fig.axes[0].get_ylabel().startswith("pixel methods")
    metrics = read_back(metrics_table(), "metrics.csv")
    fig = plots.build_localization_by_layer(metrics, "density_ratio", NETWORK)
    assert fig.axes[0].get_xticklabels()[-1].get_text() == "vanilla (pixels)"
