"""ui.svgchart: what the SVG chart component is sent (heatmap colours, printed values, hover texts; bars) and which
clicks count."""
import pytest

from ui.svgchart import RAMP, clicked, heatmap_args

VIRIDIS_LOW, VIRIDIS_HIGH = "#440154", "#FDE725"     # the ends of matplotlib's / plotly's Viridis


def test_colours_follow_the_scale_its_ends_and_clipping():
    args = heatmap_args([[0.0, 0.5], [1.0, 2.0]], ["a", "b"], ["c", "d"], zmin=0.0, zmax=1.0, colorbar="CKA")
    assert RAMP[0] == VIRIDIS_LOW and RAMP[-1] == VIRIDIS_HIGH
    (c00, c01), (c10, c11) = args["colours"]
    assert c00 == VIRIDIS_LOW and c10 == VIRIDIS_HIGH
    assert c11 == VIRIDIS_HIGH                       # 2.0 is above zmax: clipped to the top
    assert c01 == RAMP[128]                          # half way: round(0.5 * 255) = 128
    assert args["colorbar"]["low"] == "0.00" and args["colorbar"]["high"] == "1.00"
    assert args["colorbar"]["stops"][0] == [0.0, VIRIDIS_LOW] and args["colorbar"]["stops"][-1] == [1.0, VIRIDIS_HIGH]


def test_reverse_puts_the_bright_end_on_low_values_and_autoscale_uses_the_data():
    args = heatmap_args([[3.0, 5.0]], ["a", "b"], ["r"], reverse=True)
    assert args["colours"] == [[VIRIDIS_HIGH, VIRIDIS_LOW]]        # no zmin / zmax: 3 .. 5
    assert args["colorbar"]["stops"][0] == [0.0, VIRIDIS_HIGH]


def test_undefined_cells_print_nothing_and_say_undefined_and_hover_is_plain_text():
    args = heatmap_args([[None, 0.25], [float("nan"), 1.0]], ["<b>x</b>", "y"], ["p", "q"], zmin=0.0, zmax=1.0,
                        colorbar="CKA", hover_extra=[["", "permutation p = 0.040"], ["", ""]])
    assert args["z"] == [[None, 0.25], [None, 1.0]]
    assert args["colours"][0][0] is None and args["text"][0][0] == "" and args["text"][0][1] == "0.25"
    assert args["hover"][0][0] == "p vs <b>x</b>\nCKA = undefined"        # names as they are: the browser sets text
    assert args["hover"][0][1] == "p vs y\nCKA = 0.25\npermutation p = 0.040"
    assert args["x"] == ["<b>x</b>", "y"]


def test_a_click_counts_only_for_the_matrix_it_was_made_on():
    args = heatmap_args([[1.0, 0.2], [0.2, 1.0]], ["a", "b"], ["a", "b"])
    other = heatmap_args([[1.0, 0.3], [0.3, 1.0]], ["a", "b"], ["a", "b"])
    assert args["data_key"] != other["data_key"]
    click = {"kind": "cell", "row": 1, "col": 0, "data_key": args["data_key"], "seq": 3}
    assert clicked(click, args) == ("a", "b")                     # (x = column name, y = row name)
    assert clicked(click, other) is None                          # a click on an older matrix
    assert clicked({**click, "row": 2}, args) is None
    assert clicked({**click, "row": "x"}, args) is None
    assert clicked(None, args) is None and clicked("cell", args) is None


@pytest.mark.parametrize("n", [1, 4, 30])
def test_height_grows_with_the_matrix_up_to_a_cap(n):
    names = [f"s{i}" for i in range(n)]
    args = heatmap_args([[0.5] * n for _ in range(n)], names, names)
    assert args["height"] == min(max(420, 60 * n + 160), 1100)


def test_nice_ticks_are_round_and_cover_the_range():
    from ui.svgchart import nice_ticks

    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0.0, 0.37) == [0.0, 0.1, 0.2, 0.3]
    assert nice_ticks(-0.05, 0.9) == [0.0, 0.2, 0.4, 0.6, 0.8]


def test_bars_group_by_category_with_one_series_per_metric():
    from ui.svgchart import bars_args

    rows = [{"method": "affine", "metric": "top1", "mean": 0.5, "std": 0.1},
            {"method": "cca", "metric": "top1", "mean": 0.8, "std": 0.05},
            {"method": "affine", "metric": "mrr", "mean": 0.6, "std": None}]
    args = bars_args(rows, series_key="metric", category_key="method", series_labels={"top1": "top-1"},
                     category_labels={"cca": "CCA + affine"}, palette=["#111111", "#222222"], title="t")
    assert args["kind"] == "bars" and args["categories"] == ["affine", "CCA + affine"]
    top1, mrr = args["series"]
    assert (top1["name"], top1["colour"], top1["values"], top1["errors"]) == ("top-1", "#111111", [0.5, 0.8],
                                                                               [0.1, 0.05])
    assert mrr["values"] == [0.6, None] and mrr["hover"] == ["affine\nmrr = 0.600", ""]
    assert top1["hover"][1] == "CCA + affine\ntop-1 = 0.800 +- 0.050"
    lo, hi = args["y_range"]
    assert lo == 0.0 and hi == pytest.approx(0.85 * 1.05)           # highest mean + std, plus 5 %


def test_bars_note_goes_into_the_hover_and_the_reference_line_stays_inside_the_range():
    from ui.svgchart import bars_args

    rows = [{"method": "GPA", "series": "worst", "mean": 0.2, "note": "worst: <b>a</b> -> b"},
            {"method": "GCCA", "series": "worst", "mean": 0.3}]
    args = bars_args(rows, series_key="series", category_key="method", palette=["#111111"],
                     hline=(1.5, "chance 1.500"))
    (s,) = args["series"]
    assert s["errors"] == [None, None]                               # no std: no error bar
    assert s["hover"] == ["GPA\nworst = 0.200\nworst: <b>a</b> -> b", "GCCA\nworst = 0.300"]   # text, as given
    assert args["hline"] == [1.5, "chance 1.500"]
    lo, hi = args["y_range"]
    assert lo == 0.0 and hi == pytest.approx(1.5 * 1.05)              # the line (above the bars) is drawn
    assert bars_args(rows, series_key="series", category_key="method", palette=["#1"])["hline"] is None
    assert bars_args(rows, series_key="series", category_key="method", palette=["#1"],
                     hline=(float("nan"), "chance"))["hline"] is None
