"""The HTTP application (Starlette, served by uvicorn) over a :class:`~.project.Project`.

Pages: ``/a/{token}`` an annotator's page, ``/r/{token}`` the requester's dashboard.  The JSON API
takes the token in the ``X-Token`` header (or ``?token=``):

==========================  =========  ==========================================================
``GET  /api/next``          annotator  the next item chosen for this annotator (or none left)
``POST /api/answer``        annotator  ``{"item": id, "label": class name or 0-based index}``;
                                       committed to the ledger before the reply, which carries
                                       the next item
``GET  /api/media/{item}``  annotator  the item's image file
``GET  /api/dashboard``     requester  progress over time, worker skills and confusions
``GET  /api/labels.csv``    requester  item, label, confidence, annotations, finished
``GET  /api/skills.csv``    requester  worker, answers, accuracy, accuracy per class
``POST /api/stop``          requester  stop handing out items
``POST /api/annotators``    requester  ``{"id": name}``: a new annotator and their link
==========================  =========  ==========================================================

Errors: 400 malformed request, 401 no token, 403 wrong token (an annotator's token on a requester
route too), 404 unknown item, 409 an answer this annotator already gave, 422 a label outside the
classes.  An answer waits for its ledger commit on an asyncio future (the commit runs in the
project's writer thread), so the event loop is never blocked; the other handlers are synchronous
and run in Starlette's thread pool.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .project import Project

__all__ = ["create_app"]


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _page(name: str) -> str:
    return resources.files("crowdinfer.serve").joinpath("templates", name).read_text("utf-8")


def _token(request: Request) -> str:
    token = request.headers.get("x-token") or request.query_params.get("token")
    if not token:
        raise HTTPError(401, "missing token: send it in the X-Token header")
    return token


def create_app(project: Project, *, manage_project: bool = True) -> Starlette:
    """The ASGI application.  With ``manage_project`` the app starts the project's threads at
    start-up and closes the project (a last update, the lock released) at shutdown."""

    def annotator(request: Request):
        found = project.worker_of(_token(request))
        if found is None:
            raise HTTPError(403, "unknown annotator token")
        return found

    def requester(request: Request) -> None:
        if not project.is_requester(_token(request)):
            raise HTTPError(403, "this token may not see the dashboard")

    def next_payload(code: int) -> dict:
        item = project.next_item(code)
        done = project.answered_by(code)
        if item is None:
            message = (f"The project is finished ({project.stopped})." if project.stopped
                       else "Nothing to label for you right now; come back in a moment.")
            return {"item": None, "finished": project.stopped is not None, "message": message,
                    "answered": done}
        return {**project.item_payload(item), "answered": done}

    def api_next(request: Request):
        name, code = annotator(request)
        return JSONResponse({"worker": name, "classes": project.classes, **next_payload(code)})

    async def api_answer(request: Request):
        name, code = annotator(request)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HTTPError(400, "the body must be JSON: {\"item\": ..., \"label\": ...}") from None
        if not isinstance(body, dict) or "item" not in body or "label" not in body:
            raise HTTPError(400, "the body must be JSON: {\"item\": ..., \"label\": ...}")
        item = project.session.item_index.get(str(body["item"]))
        if item is None:
            raise HTTPError(404, f"unknown item {body['item']!r}")
        label = body["label"]
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise HTTPError(422, f"label must be a class name or index, got {label!r}")
        if isinstance(label, str):
            if label not in project.classes:
                raise HTTPError(422, f"label {label!r} is not one of the classes {project.classes}")
            label = project.classes.index(label)
        elif not 0 <= label < len(project.classes):
            raise HTTPError(422, f"label index {label} outside 0..{len(project.classes) - 1}")
        accepted, reason = await asyncio.wait_for(project.submit_async(code, item, label), 30.0)
        if not accepted:
            if reason.startswith("duplicate"):
                raise HTTPError(409, f"{name} already answered item {body['item']!r}")
            raise HTTPError(500, reason)
        nxt = next_payload(code)  # a masked argmax on the host: well under a millisecond
        return JSONResponse({"ok": True, "next": nxt})

    def api_media(request: Request):
        annotator(request)
        code = project.session.item_index.get(request.path_params["item"])
        if code is None:
            raise HTTPError(404, f"unknown item {request.path_params['item']!r}")
        if project.kind != "image":
            raise HTTPError(404, "this project has no images")
        try:
            return FileResponse(project.media_path(code))
        except FileNotFoundError as err:
            raise HTTPError(404, str(err)) from None

    def api_dashboard(request: Request):
        requester(request)
        return JSONResponse(project.summary())

    def api_labels(request: Request):
        requester(request)
        return Response(project.labels_frame().to_csv(index=False), media_type="text/csv",
                        headers={"content-disposition": "attachment; filename=labels.csv"})

    def api_skills(request: Request):
        requester(request)
        return Response(project.skills_frame().to_csv(index=False), media_type="text/csv",
                        headers={"content-disposition": "attachment; filename=skills.csv"})

    def api_stop(request: Request):
        requester(request)
        project.stop()
        return JSONResponse({"stopped": project.stopped})

    async def api_annotators(request: Request):
        requester(request)
        try:
            body = json.loads(await request.body())
            name = str(body["id"]).strip()
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise HTTPError(400, "the body must be JSON: {\"id\": \"annotator name\"}") from None
        if not name:
            raise HTTPError(400, "an annotator needs a non-empty id")
        token = project.add_annotator(name)
        return JSONResponse({"id": name, "token": token, "link": f"/a/{token}"})

    def page_annotate(request: Request):
        if project.worker_of(request.path_params["token"]) is None:
            return HTMLResponse("<h1>Unknown link</h1><p>Ask the requester for your link.</p>",
                                status_code=403)
        return HTMLResponse(_page("annotate.html"))

    def page_dashboard(request: Request):
        if not project.is_requester(request.path_params["token"]):
            return HTMLResponse("<h1>Unknown link</h1>", status_code=403)
        return HTMLResponse(_page("dashboard.html"))

    def static(request: Request):
        name = request.path_params["name"]
        if name not in ("annotate.js", "dashboard.js", "style.css"):
            raise HTTPError(404, "no such file")
        kind = "text/css" if name.endswith(".css") else "text/javascript"
        text = resources.files("crowdinfer.serve").joinpath("static", name).read_text("utf-8")
        return Response(text, media_type=kind)

    async def http_error(request: Request, exc: HTTPError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if manage_project:
            project.start()
        try:
            yield
        finally:
            if manage_project:
                project.close()

    routes = [
        Route("/a/{token}", page_annotate),
        Route("/r/{token}", page_dashboard),
        Route("/static/{name}", static),
        Route("/api/next", api_next),
        Route("/api/answer", api_answer, methods=["POST"]),
        Route("/api/media/{item:path}", api_media),
        Route("/api/dashboard", api_dashboard),
        Route("/api/labels.csv", api_labels),
        Route("/api/skills.csv", api_skills),
        Route("/api/stop", api_stop, methods=["POST"]),
        Route("/api/annotators", api_annotators, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPError: http_error}, lifespan=lifespan)
