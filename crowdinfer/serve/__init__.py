"""``crowdinfer serve``: a labelling server for real annotators, driven by the online loop.

    from crowdinfer.serve import create_project, Project, create_app
    create_project("myproject", "items.csv", ["cat", "dog"], annotators=["alice"])
    project = Project("myproject")            # takes the folder's lock
    app = create_app(project)                 # Starlette; uvicorn.run(app, host="127.0.0.1")

The web framework (starlette, uvicorn) is an optional extra: ``pip install crowdinfer[serve]``.
"""
from .project import Project, ProjectError, create_project, read_items

__all__ = ["Project", "ProjectError", "create_project", "read_items", "create_app"]


def create_app(project, **kwargs):
    """The Starlette application over ``project`` (see :mod:`crowdinfer.serve.app`)."""
    from .app import create_app as make

    return make(project, **kwargs)
