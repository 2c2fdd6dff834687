"""The SVG charts: readable axes, thresholds, legends, gaps, and nothing the CSP refuses."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, date, datetime, timedelta

from webapp.charts import (
    VERDICT_THRESHOLDS,
    Day,
    Series,
    Threshold,
    category_bars,
    time_chart,
    uptime_bar,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


def parse(svg) -> ET.Element:
    root = ET.fromstring(str(svg))  # well-formed XML, so WeasyPrint can draw it in the PDF too
    assert not any("style" in element.attrib for element in root.iter())  # the CSP refuses style=""
    assert "<script" not in str(svg)
    return root


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_score_chart_has_dated_axis_values_thresholds_and_a_legend():
    scores = Series("Score", [(START + timedelta(days=n * 10), 50.0 + n * 5) for n in range(8)])
    other = Series("Design review", [(START + timedelta(days=n * 10), 40.0 + n) for n in range(8)])
    svg = time_chart([scores, other], title="Score over time", y_max=100, thresholds=VERDICT_THRESHOLDS)
    labels = texts(parse(svg))
    assert "01 Jan" in labels and "12 Mar" in labels  # first and last dates on the x axis
    assert {"0", "25", "50", "75", "100"} <= set(labels)  # values on the y axis
    assert "Ready ≥ 85" in labels and "Conditions ≥ 70" in labels
    assert "Score (85)" in labels and "Design review (47)" in labels  # legend, with latest values
    assert svg.count("<polyline") == 2


def test_a_single_series_has_no_legend_and_gaps_break_the_line():
    points = [(START, 10.0), (START + timedelta(hours=1), None), (START + timedelta(hours=2), 30.0),
              (START + timedelta(hours=3), 40.0)]
    root = parse(time_chart([Series("Latency", points)], title="Latency", unit=" ms"))
    labels = texts(root)
    assert not any(label.startswith("Latency") for label in labels)
    assert any(label.endswith(" ms") for label in labels)
    assert str(time_chart([Series("Latency", points)], title="Latency")).count("<polyline") == 1


def test_points_minutes_apart_get_labels_that_differ():
    points = [(START + timedelta(seconds=n * 40), 50.0 + n) for n in range(4)]  # two minutes in all
    x_labels = [label for label in texts(parse(time_chart([Series("Score", points)], title="Score")))
                if label.startswith("01 Jan")]
    assert x_labels[0] == "01 Jan 00:00:00" and x_labels[-1] == "01 Jan 00:02:00"
    assert len(x_labels) == len(set(x_labels))
    hour = [(START + timedelta(minutes=n * 20), 50.0) for n in range(4)]  # labels by the minute...
    hour_labels = [label for label in texts(parse(time_chart([Series("Score", hour)], title="Score")))
                   if label.startswith("01 Jan")]
    assert len(hour_labels) == len(set(hour_labels)) == 5  # ...and none twice


def test_no_data_says_so():
    assert "no data yet" in time_chart([Series("x", [])], title="Latency")
    assert "no probe results yet" in uptime_bar([], title="Health")


def test_uptime_bar_one_block_per_day_with_worst_outcome_and_summary():
    days = [Day(date(2026, 1, 1), 96, 96, "pass"), Day(date(2026, 1, 2), 96, 90, "fail"),
            Day(date(2026, 1, 3), 0, 0, None)]
    svg = uptime_bar(days, title="Health")
    root = parse(svg)
    rects = list(root.iter("{http://www.w3.org/2000/svg}rect"))
    assert len(rects) == 3
    assert "02 Jan 2026: 93.75% of 96 passed, worst fail" in svg
    assert "03 Jan 2026: no checks" in svg
    assert "96.87% of 192 checks passed" in svg  # 96.875: cut, not rounded up


def test_uptime_is_never_rounded_up_to_a_perfect_score():
    svg = uptime_bar([Day(date(2026, 1, 1), 2700, 2699, "warn")], title="Health")
    assert "99.96% of 2,700 checks passed" in svg and "100% of" not in svg
    assert "100% of 5 checks passed" in uptime_bar([Day(date(2026, 1, 1), 5, 5, "pass")], title="Health")
    assert "100% of 1 check passed" in uptime_bar([Day(date(2026, 1, 1), 1, 1, "pass")], title="Health")


def test_category_bars_write_each_score_and_na():
    svg = category_bars([("Observability", 92.5), ("Security", 40.0), ("Data", None)], title="By category",
                        thresholds=(Threshold(85, "Ready"), Threshold(70, "Conditions")))
    labels = texts(parse(svg))
    assert {"Observability", "Security", "Data", "92.5", "40", "n/a", "Ready", "Conditions"} <= set(labels)


def test_untrusted_labels_are_escaped():
    svg = time_chart([Series("<script>x</script>", [(START, 1.0), (START + timedelta(days=1), 2.0)]),
                      Series("b", [(START, 1.0)])], title='"><img onerror=1>')
    assert "<script>x" not in svg and "<img onerror" not in svg
    parse(svg)
