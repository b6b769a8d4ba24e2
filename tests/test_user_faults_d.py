"""Issue 14, item 19 (without the cache): what the survey's command line and plots show a user.

- an unknown option prints the subcommand's own usage, not the top-level one;
- a model whose metadata names no data set, without --data, gets an error naming --data;
- the per-layer heatmap's suptitle clears the subplot titles, and the labels of the
  accuracy-against-MAE plot overlap neither each other nor the markers (text boxes measured
  with the figure's renderer).
"""
import numpy as np
import pytest

from axkern.cli import main

TOP_USAGE = "usage: axkern [-h]"


@pytest.mark.parametrize("argv, command", [
    (["survey", "--bogus"], "survey"),
    (["survey", "--per-layer", "--bogus", "x"], "survey"),
    (["eval", "--bogus"], "eval"),
    (["list", "--json", "--bogus"], "list"),
    (["metrics", "mul8u_exact", "--bogus"], "metrics"),
    (["lut", "mul8u_exact", "-o", "out.bin", "--bogus"], "lut"),
])
def test_unknown_option_prints_the_subcommands_usage(argv, command, capsys, tmp_path,
                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: axkern {command} "), err
    assert TOP_USAGE not in err
    errors = [ln for ln in err.splitlines() if ": error:" in ln]
    assert errors == [f"axkern {command}: error: unrecognized arguments: "
                      + " ".join(a for a in argv if a in ("--bogus", "x"))], err
    assert not (tmp_path / "out.bin").exists()   # nothing ran


@pytest.fixture
def model_without_data(tmp_path):
    from axkern.nn import Dense, Flatten, Sequential

    path = tmp_path / "plain.npz"
    w = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    Sequential([Flatten(), Dense(w)], input_shape=(8, 8, 1), name="plain",
               metadata={"note": "no data set named"}).save(path)
    return path


@pytest.mark.parametrize("command", ["survey", "eval"])
def test_model_without_data_set_names_the_data_option(command, model_without_data, tmp_path,
                                                      capsys):
    argv = (["survey", "--model", str(model_without_data), "--no-progress", "--no-plot",
             "--output", str(tmp_path / "out")] if command == "survey"
            else ["eval", str(model_without_data)])
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("axkern: error: "), err
    assert "--data" in lines[0] and "names no data set" in lines[0]
    assert "Traceback" not in err


# ------------------------------------------------------------------------------ plots
# The figures of `axkern survey` on the shipped model (README.md): (name, MAE%, accuracy %,
# tuned accuracy %). The crowd between 0.3 and 3 % MAE is what the labels must survive.
SURVEY_ROWS = [
    ("mul8u_exact", 0.0, 99.33, 99.33), ("mul8u_trunc2", 0.0019, 99.33, 99.33),
    ("mul8u_trunc4", 0.0187, 99.56, 99.56), ("mul8u_perf1", 0.0973, 99.33, 99.33),
    ("mul8u_trunc6", 0.1225, 99.11, 98.89), ("mul8u_perf2", 0.2918, 98.67, 99.11),
    ("mul8u_bam_v4h2", 0.2995, 98.67, 99.11), ("mul8u_drum6", 0.3553, 98.67, 98.89),
    ("mul8u_trunc8", 0.6840, 92.44, 96.67), ("mul8u_drum5", 0.7098, 97.56, 97.33),
    ("mul8u_bam_v8h2", 0.7816, 92.89, 96.89), ("mul8u_mitchell", 0.9253, 93.78, 98.89),
    ("mul8u_perf2s2", 1.1673, 92.67, 99.56), ("mul8u_drum4", 1.4127, 82.00, 93.56),
    ("mul8u_perf4", 1.4591, 89.33, 98.00), ("mul8u_bam_v8h4", 1.7582, 81.11, 98.22),
    ("mul8u_trunc10", 2.5394, 35.33, 64.89), ("mul8u_mitchell_f3", 2.7601, 55.33, 98.44),
    ("mul8u_drum3", 2.8184, 40.67, 54.89), ("mul8u_bam_v10h5", 4.1019, 21.56, 77.56),
]
LAYERS = ["conv1", "conv2", "conv3", "dense1"]


def _result(n_multipliers, plot):
    """A survey result drawing only ``plot`` ("accuracy" or "per_layer")."""
    rows = [dict(multiplier=n, mae_pct=mae, accuracy=a, accuracy_tuned=t)
            for n, mae, a, t in SURVEY_ROWS[:n_multipliers]]
    rng = np.random.default_rng(1)
    mat = lambda: np.round(rng.uniform(10, 99.3, (n_multipliers, len(LAYERS))), 2).tolist()
    per_layer = {"layers": LAYERS, "multipliers": [r["multiplier"] for r in rows],
                 "accuracy": mat(), "accuracy_tuned": mat()}
    return {"model": "digits_cnn", "samples": 450, "float_accuracy": 99.11, "assign": None,
            "rows": rows if plot == "accuracy" else [],
            "per_layer": per_layer if plot == "per_layer" else None}


@pytest.fixture
def survey_figures(tmp_path, monkeypatch):
    """Draw the survey's plots and keep the figures (by file name) for measuring."""
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.figure
    import matplotlib.pyplot as plt

    from axkern.survey import _write_plots

    figures, drawn = {}, []
    real_savefig, real_close = matplotlib.figure.Figure.savefig, plt.close

    def savefig(fig, path, *args, **kwargs):
        figures[str(path).replace("\\", "/").rsplit("/", 1)[-1]] = fig
        drawn.append(fig)
        return real_savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)   # keep them for measuring

    def draw(n_multipliers, plot):
        figures.clear()
        _write_plots(_result(n_multipliers, plot), str(tmp_path))
        for fig in figures.values():
            fig.canvas.draw()
        return dict(figures)

    yield draw
    for fig in drawn:
        real_close(fig)


def _box(artist, renderer, extent=None):
    b = (extent or type(artist).get_window_extent)(artist, renderer)
    return (b.x0, b.y0, b.x1, b.y1)


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("n_multipliers", [3])   # a short heatmap: little room for titles
def test_per_layer_suptitle_clears_the_subplot_titles(survey_figures, n_multipliers):
    fig = survey_figures(n_multipliers, "per_layer")["per_layer.png"]
    renderer = fig.canvas.get_renderer()
    sup = fig._suptitle   # the Text (Figure.get_suptitle returns only the string)
    assert sup is not None and sup.get_text()
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert len(titles) == 2
    sup_box = _box(sup, renderer)
    for t in titles:
        assert not _overlap(sup_box, _box(t, renderer)), (sup_box, _box(t, renderer))
        assert _box(t, renderer)[3] <= sup_box[1]   # the titles sit below the suptitle
    assert not _overlap(_box(titles[0], renderer), _box(titles[1], renderer))


def test_accuracy_plot_labels_do_not_crowd(survey_figures):
    from matplotlib.text import Text

    n_multipliers = len(SURVEY_ROWS)
    fig = survey_figures(n_multipliers, "accuracy")["accuracy_vs_mae.png"]
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    names = {r[0] for r in SURVEY_ROWS[:n_multipliers]}
    labels = [t for t in ax.texts if t.get_text() in names]
    assert sorted(t.get_text() for t in labels) == sorted(names)   # every point is named
    # the text alone: an annotation's own extent includes its leader line
    boxes = {t.get_text(): _box(t, renderer, Text.get_window_extent) for t in labels}
    items = sorted(boxes.items())
    for i, (n1, b1) in enumerate(items):
        for n2, b2 in items[i + 1:]:
            assert not _overlap(b1, b2), f"labels {n1!r} and {n2!r} overlap"
    frame = ax.get_window_extent(renderer)
    for n, b in items:
        assert frame.x0 <= b[0] and b[2] <= frame.x1 and frame.y0 <= b[1] and b[3] <= frame.y1, \
            f"label {n!r} leaves the axes"
    # no label covers a marker's centre (untuned or tuned)
    centres = np.concatenate([c.get_offsets() for c in ax.collections])
    for x, y in ax.transData.transform(centres):
        for n, b in items:
            assert not (b[0] <= x <= b[2] and b[1] <= y <= b[3]), f"label {n!r} covers a marker"
    legend = ax.get_legend()
    if legend is not None:
        lb = _box(legend, renderer)
        for n, b in items:
            assert not _overlap(lb, b), f"label {n!r} covers the legend"
