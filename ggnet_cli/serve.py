"""`ggnet serve`: the API under gunicorn, as the systemd unit of roles/ggnet_api runs it.

One worker with threads: the job queue and the collector live in the worker's process
(see ggnet_api/app.py), and server-sent event streams each hold a thread while they last,
so the API is told the thread count and keeps streams to half of it.

With --certfile and --keyfile gunicorn speaks HTTPS on every address it binds, the boot
path's included: the PCs' iPXE then needs to trust the certificate (docs/security.md).
"""

from __future__ import annotations

import argparse
import os

HELP = "run the API under gunicorn (one worker, threads)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bind", default="127.0.0.1:8080", help="address:port (default 127.0.0.1:8080)"
    )
    parser.add_argument("--threads", type=int, default=16, help="request threads (default 16)")
    parser.add_argument("--config", help="API settings file (YAML); default $GGNET_API_CONFIG")
    parser.add_argument(
        "--certfile", help="TLS certificate (PEM, chain included): serve HTTPS; needs --keyfile"
    )
    parser.add_argument("--keyfile", help="the certificate's private key (PEM)")


def gunicorn_argv(args: argparse.Namespace, python: str = "python3") -> list[str]:
    # gunicorn runs under the same Python as this command: on a server that is the
    # venv that holds ggnet, which Debian's /usr/bin/gunicorn would not see.
    return [
        python,
        "-m",
        "gunicorn",
        "--workers",
        "1",
        "--worker-class",
        "gthread",
        "--threads",
        str(args.threads),
        "--bind",
        args.bind,
        # SSE streams stay open while a job runs; the worker must not be killed for it.
        "--timeout",
        "0",
        "--graceful-timeout",
        "30",
        "--access-logfile",
        "-",
        *tls_argv(args),
        # The API keeps event streams to half of these threads (the rest serve /boot).
        "--env",
        f"GGNET_API_REQUEST_THREADS={args.threads}",
        "ggnet_api.app:wsgi()",
    ]


def tls_argv(args: argparse.Namespace) -> list[str]:
    """gunicorn's TLS options; ValueError unless the certificate and key come together."""
    certfile: str | None = getattr(args, "certfile", None)
    keyfile: str | None = getattr(args, "keyfile", None)
    if not certfile and not keyfile:
        return []
    if not certfile or not keyfile:
        raise ValueError("--certfile and --keyfile go together: HTTPS needs both")
    return ["--certfile", certfile, "--keyfile", keyfile]


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import sys

    if args.config:
        os.environ["GGNET_API_CONFIG"] = args.config
    if importlib.util.find_spec("gunicorn") is None:
        print(f"gunicorn is not importable by {sys.executable}", file=sys.stderr)
        return 1
    try:
        argv = gunicorn_argv(args, sys.executable)
    except ValueError as exc:
        print(f"ggnet serve: {exc}", file=sys.stderr)
        return 2
    os.execv(argv[0], argv)
    return 0  # not reached
