"""benchmarks/throughput.py, the GPU images/s benchmark, works end to end (here on the CPU, tiny)."""
import importlib.util
import json
from pathlib import Path


def test_the_throughput_benchmark_times_each_backend_and_precision(tmp_path):
    spec = importlib.util.spec_from_file_location("throughput", Path(__file__).parents[2] / "benchmarks" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    out = tmp_path / "throughput.json"
    code = throughput.main(["--device", "cpu", "--model", "untrained:dino-tiny", "--size", "96", "128",
                            "--repeats", "1", "--warmup", "0", "--backends", "auto", "reference",
                            "--precisions", "float32", "bfloat16", "--detections-only", "--json", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())
    assert [(row["backend"], row["precision"]) for row in rows] == [
        ("auto", "float32"), ("auto", "bfloat16"), ("reference", "float32"), ("reference", "bfloat16")]
    assert all(row["served_by"] == "reference" for row in rows[2:])
    assert all(row["images_per_s"] > 0 and row["internals"] is False for row in rows)
