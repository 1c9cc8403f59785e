"""``python -m skal.label_studio``: serve a labelling session to Label Studio.

The Python file given defines ``learner`` (an unfitted ActiveLearner) and
``pool`` (the rows to label; an :class:`~skal.label_studio.ImageFolder` for
images); it may define ``directory`` (where the session lives) and
``cold_start``. For example::

    python -m skal.label_studio serve my_pool.py --port 9090 \\
        --url http://localhost:8080 --api-key $LABEL_STUDIO_API_KEY --project 1
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

from ..session import LabelingSession
from ._backend import serve
from ._client import LabelStudioClient
from ._sync import sync


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m skal.label_studio",
        description="Connect a skal labelling session to Label Studio.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the ML backend (blocks)")
    sync = commands.add_parser("sync", help="one round: pull answers, train, push")
    for sub in (serve, sync):
        sub.add_argument("file", help="Python file defining learner and pool")
        sub.add_argument(
            "--url",
            default=os.environ.get("LABEL_STUDIO_URL", "http://localhost:8080"),
            help="Label Studio's address (default: $LABEL_STUDIO_URL or "
            "http://localhost:8080)",
        )
        sub.add_argument(
            "--api-key",
            default=os.environ.get("LABEL_STUDIO_API_KEY"),
            help="access token (default: $LABEL_STUDIO_API_KEY)",
        )
        sub.add_argument("--project", type=int, required=True, help="project id")
        sub.add_argument(
            "--directory",
            help="the session's directory (default: the file's `directory`, or "
            "<file>-session beside it)",
        )
        sub.add_argument(
            "--document-root",
            default=os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"),
            help="Label Studio's local-files document root, to import an "
            "ImageFolder pool as tasks (default: "
            "$LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)",
        )
        sub.add_argument(
            "--n", type=int, default=None, help="picks per push (serve 100, sync 10)"
        )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=int, default=9090, help="port to listen on")
    serve.add_argument(
        "--no-connect",
        action="store_true",
        help="do not connect the backend to the project (connect it in Label "
        "Studio's settings, Model tab, instead)",
    )
    serve.add_argument(
        "--train-every",
        type=int,
        default=1,
        help="train once this many answers arrived since the last training",
    )
    serve.add_argument("--log-level", default="warning", help="uvicorn's log level")
    return parser


def _session(args):
    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"error: {args.file!r} is not a file")
    namespace = runpy.run_path(str(path), run_name="__skal_label_studio__")
    missing = [name for name in ("learner", "pool") if name not in namespace]
    if missing:
        raise SystemExit(
            f"error: {args.file} must define {' and '.join(missing)} "
            "(an unfitted ActiveLearner and the pool of rows to label)"
        )
    directory = args.directory or namespace.get("directory")
    if directory is None:
        directory = path.with_name(path.stem + "-session")
    kwargs = {}
    if "cold_start" in namespace:
        kwargs["cold_start"] = namespace["cold_start"]
    if not args.api_key:
        raise SystemExit("error: give --api-key or set LABEL_STUDIO_API_KEY")
    session = LabelingSession(
        namespace["learner"], namespace["pool"], directory, **kwargs
    )
    files = getattr(namespace["pool"], "files", None)
    task_ids = None
    if files is not None:
        client = LabelStudioClient(args.url, args.api_key)
        task_ids = client.import_images(
            args.project, files, document_root=args.document_root
        )
    return session, task_ids


def main(argv=None):
    args = _parser().parse_args(argv)
    session, task_ids = _session(args)
    if args.command == "sync":
        report = sync(session, args.url, args.api_key, args.project, n=args.n or 10)
        print(
            f"taught {len(report.taught)}, relabelled {len(report.relabelled)}, "
            f"unlabelled {len(report.unlabelled)}, trained {report.trained}; "
            f"Label Studio serves {report.model_version}"
        )
        return 0

    print(
        f"skal backend for project {args.project} on http://{args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    serve(
        session,
        args.host,
        args.port,
        url=args.url,
        api_key=args.api_key,
        project=args.project,
        n=args.n or 100,
        connect=not args.no_connect,
        train_every=args.train_every,
        task_ids=task_ids,
        log_level=args.log_level,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
