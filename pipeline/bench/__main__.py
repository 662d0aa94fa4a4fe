"""``python -m pipeline.bench [build|deploy ...]``: run benchmarks and print a summary table."""

from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from pipeline.progress import RichProgress

    parser = argparse.ArgumentParser(prog="python -m pipeline.bench")
    parser.add_argument("which", nargs="*", default=["build", "trainer", "deploy", "farm", "compression", "onnx", "gate", "cluster"], help="benchmarks to run (build, seeds, trainer, deploy, farm, fleet, compression, onnx, gate, cluster)")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--quick", action="store_true", help="gate: a quarter of the nights (A/A 25+25, 8 per rung; targets not certified)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    console = Console()
    for name in args.which:
        if name == "build":
            from pipeline.bench import build_bench

            payload = build_bench.run(args.profile, progress=RichProgress())
        elif name == "seeds":  # distilled vs scratch over 3 seeds (the build bench runs it for its profile)
            from pipeline.bench import seeds_bench

            payload = seeds_bench.run(args.profile, progress=RichProgress())
        elif name == "trainer":  # training-step time by BatchNorm implementation and thread count
            from pipeline.bench import trainer_bench

            payload = trainer_bench.run(progress=RichProgress())
        elif name == "deploy":
            from pipeline.bench import deploy_bench

            payload = deploy_bench.run(args.profile, progress=RichProgress())
        elif name == "farm":
            from pipeline.bench import farm_bench

            payload = farm_bench.run(args.profile, progress=RichProgress())
        elif name == "fleet":  # the farm bench's fleet sections alone, merged into farm.json
            from pipeline.bench import fleet_bench

            payload = fleet_bench.run_alone(args.profile, progress=RichProgress())
        elif name == "compression":
            from pipeline.bench import compression_bench

            payload = compression_bench.run(args.profile, progress=RichProgress())
        elif name == "onnx":
            from pipeline.bench import onnx_bench

            payload = onnx_bench.run(args.profile, progress=RichProgress())
        elif name == "gate":
            from pipeline.bench import gate_bench

            payload = gate_bench.run(args.profile, progress=RichProgress(), quick=args.quick)
        elif name == "cluster":  # a sweep of the quick grid on a two-worker LocalCluster
            from pipeline.bench import cluster_bench

            payload = cluster_bench.run("quick" if args.profile == "default" else args.profile, progress=RichProgress())
        else:
            parser.error(f"unknown benchmark {name!r}")
        written = f"seeds-{args.profile}" if name == "seeds" else name
        table = Table(title=f"bench: {name} (results/bench/{written}.json)")
        for column in ("target", "value", "limit", "met"):
            table.add_column(column)
        for key, t in payload["targets"].items():
            table.add_row(key, str(t.get("value")), str(t.get("limit", "")), {True: "yes", False: "NO", None: "-"}[t.get("met")])
        console.print(table)


if __name__ == "__main__":
    main()
