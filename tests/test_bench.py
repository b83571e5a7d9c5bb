"""The GCIDE benchmark's table: best values in bold, baselines without training time."""

from twotower.bench.gcide import METRICS, table


def test_table_marks_the_best_of_each_metric():
    rows = [
        {"model": "a", "metrics": dict.fromkeys(METRICS, 0.5), "train_s": None, "index_s": 2.0},
        {
            "model": "b",
            "metrics": dict.fromkeys(METRICS, 0.25),
            "train_s": 61.0,
            "epochs": 4,
            "index_s": 9.0,
        },
    ]
    lines = table(rows).splitlines()
    assert lines[0].startswith("| model | R@1 | R@10 | R@100 | MRR@10 | NDCG@10 |")
    assert lines[2] == "| a | " + " | ".join(["**0.5000**"] * len(METRICS)) + " | - | 2 |"
    assert lines[3].endswith("| 0.2500 | 61 (4 ep.) | 9 |")
