"""``crowdinfer serve PROJECT``: create a labelling project (first run, with ``--items`` and
``--classes``) and serve it; run it again to resume after a stop or a crash."""
from __future__ import annotations

import importlib.util
import sys

__all__ = ["add_arguments", "run"]


def add_arguments(parser) -> None:
    parser.add_argument("project", help="the project folder (created on the first run)")
    parser.add_argument("--items", default=None,
                        help="first run: CSV/Parquet of items (item, image or text, optional "
                             "numeric features, optional label = prototype)")
    parser.add_argument("--classes", default=None, help="first run: class names, comma-separated")
    parser.add_argument("--preset", default=None,
                        help="first run: ds_model (default without features) or "
                             "efficient_annotation (default with features), lean, improved_lean")
    parser.add_argument("--sampler", default="random", help="first run: random, greedy or bald")
    parser.add_argument("--update-every", type=int, default=None,
                        help="first run: answers between two updates (default N/20, 5..200)")
    parser.add_argument("--no-early-stop", action="store_true",
                        help="first run: stop only when every item is finished or at its cap "
                             "(or from the dashboard), never because progress stalled")
    parser.add_argument("--annotators", default="",
                        help="annotator ids to create, comma-separated (more can join later)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                        "127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--links", action="store_true",
                        help="print the dashboard and annotator links and exit")
    parser.set_defaults(no_cache=False)


def _links(project, base: str) -> str:
    lines = [f"dashboard (requester): {base}/r/{project.spec['requester_token']}"]
    lines += [f"annotator {name}: {base}/a/{token}" for name, token in sorted(project.tokens.items())]
    return "\n".join(lines)


def run(args) -> int:
    from pathlib import Path

    from .project import Project, ProjectError, create_project

    folder = Path(args.project)
    if not args.links:  # before any work: a project made by a command that cannot serve it
        missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
        if missing:
            raise ProjectError(f"serving needs {', '.join(missing)}: pip install "
                               "'crowdinfer[serve]' (--links works without them)")
    names = [a.strip() for a in args.annotators.split(",") if a.strip()]
    if args.items is not None:
        if not args.classes:
            raise ProjectError("a new project needs --classes (e.g. --classes cat,dog,bird)")
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        extra = {"early_stop": None} if args.no_early_stop else {}
        create_project(folder, args.items, classes, preset=args.preset, sampler=args.sampler,
                       update_every=args.update_every, **extra)
    elif not (folder / "project.json").exists():
        raise ProjectError(f"{folder} holds no project yet: create it with --items and --classes")
    project = Project(folder)
    try:
        for name in names:
            project.add_annotator(name)
    except BaseException:
        project.close(final_update=False)
        raise
    base = f"http://{args.host}:{args.port}"
    print(_links(project, base), flush=True)
    if args.links:
        project.close(final_update=False)
        return 0
    import uvicorn

    from .app import create_app

    print(f"serving {folder} on {base} (Ctrl-C to stop; run the same command to resume)",
          file=sys.stderr, flush=True)
    uvicorn.run(create_app(project), host=args.host, port=args.port, log_level="warning",
                access_log=False, workers=1)
    return 0
