"""`ggnet job trace ID`: a job's waterfall, read from the API's trace file.

With the API's `tracing` on and no OTLP endpoint, every job's spans (the job, its
plays, tasks and hosts) are in a JSON-lines file (ggnet_api/tracing.py).  This reads
it (and its rotated copies) and prints each span's offset from the job's start, its
duration, its status and its name, indented under its parent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "jobs: trace ID prints a job's waterfall (the API's tracing setting)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    trace = sub.add_parser("trace", help="print a job's waterfall from the API's trace file")
    trace.add_argument("job_id", metavar="ID", help="the job's id (GET /api/jobs)")
    trace.add_argument(
        "--file",
        help="the trace file (default: the API's tracing_file, traces.jsonl in its state_dir)",
    )
    trace.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args: argparse.Namespace) -> int:
    from ggnet_api import config as config_mod
    from ggnet_api import tracing

    config = config_mod.load()
    path = Path(args.file) if args.file else tracing.trace_file(config)
    files = tracing.trace_files(path, int(config["tracing_file_backups"]))
    if not files:
        where = (
            f"the API sends its spans to {config['tracing_otlp_endpoint']}, not to a file"
            if config.get("tracing_otlp_endpoint")
            else "is the API's tracing setting on?"
        )
        print(f"ggnet job trace: no trace file at {path} ({where})", file=sys.stderr)
        return 1
    rows = tracing.job_waterfall(tracing.job_spans(tracing.read_spans(files), args.job_id))
    if not rows:
        print(
            f"ggnet job trace: job {args.job_id} is not in {path} (not traced, still "
            "running, or rotated out)",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        sys.stdout.write(tracing.format_waterfall(rows))
    return 0
