"""The GCIDE benchmark's table: best values in bold, baselines without training time."""

from bench.gcide import METRICS, table


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


def test_ml100k_rows_are_mean_and_std_over_seeds_with_the_best_in_bold():
    from bench.ml100k import KS, summarise
    from bench.ml100k import table as ml_table

    def result(value, seconds):
        names = [f"{m}@{k}" for m in ("recall", "mrr", "ndcg", "hit", "precision") for k in KS]
        metrics = {f"test/{name}": value for name in names}
        return {"metrics": metrics, "epoch_time_s": seconds, "epochs": 3, "peak_memory_mib": 500}

    trained = summarise("p", "two-tower", "x", [result(0.3, 1.0), result(0.5, 3.0)])
    assert trained["recall@10"] == (0.4, 0.1414213562373095)  # sample std over seeds
    assert trained["s_per_epoch"] == (2.0, 1.4142135623730951)
    pop = summarise("p", "pop", "pop", [{"metrics": result(0.1, 0)["metrics"]}])
    lines = ml_table([pop, trained]).splitlines()
    assert lines[2] == "| p | pop | " + " | ".join(["0.1000 ± 0.0000"] * 5) + " | - | - |"
    best = " | ".join(["**0.4000 ± 0.1414**"] * 5)
    assert lines[3] == f"| p | two-tower | {best} | 2.00 | 500 |"


def test_speed_bench_interleaves_and_tabulates_ratios():
    from bench.speed import interleaved, markdown, median

    calls = []
    a, b = interleaved(
        lambda: calls.append("a") or {"s": 1.0}, lambda: calls.append("b") or {"s": 3.0}, repeats=3
    )
    assert calls == ["a", "b", "b", "a", "a", "b"] and median(a, "s") == 1.0
    calls.clear()
    interleaved(*(lambda x=x: calls.append(x) or {} for x in "abc"), repeats=2)
    assert calls == ["a", "b", "c", "c", "b", "a"]
    row = {"row": "x: s", "twotower": 2.0, "reference": 4.0, "reference_is": "bare", "ratio": 0.5,
           "target": "<= 1", "epoch_s": 1.5, "bare_epoch_s": 1.0, "epoch_ratio": 1.5,
           "validation_s_per_epoch": 0.25, "peak_memory_mib": 512,
           "bare_peak_memory_mib": 256}  # fmt: skip
    machine = {"cpu": "Some CPU", "cpu_count": 2, "torch_threads": 2, "python": "3", "torch": "t",
               "lightning": "l", "faiss": "f"}  # fmt: skip
    report = {"command": "c", "machine": machine, "repeats": 3, "loadavg_start": (1.0, 0, 0),
              "loadavg_end": (2.0, 0, 0), "seconds": 9.0, "rows": [row]}  # fmt: skip
    text = markdown(report)
    assert "Some CPU, 2 cores" in text and "| x: s | 2 | 4 | 0.50 | <= 1 | bare |" in text
    assert "| x | 1.50 | 1.00 | 1.50 | 0.25 | 512 | 256 |" in text
    assert "Against the yardsticks" not in text  # no yardstick measured: no such table
    row |= {"yardstick": 8.0, "yardstick_ratio": 0.25}
    assert "| x: s | 2 | 8 | 0.25 | <= 1 |" in markdown(report)
