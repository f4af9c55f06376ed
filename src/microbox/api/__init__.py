"""The HTTP API (`microbox serve`): a FastAPI front end over the SDK. See docs/api.md.

app.py        The HTTP API's application
boxes.py      Box lifecycle and image routes
builds.py     Image builds and commits
execute.py    Running commands
files.py      Files in and out of a box, and its console log
guard.py      What every request passes first
models.py     Request and response bodies of the HTTP API (they make /openapi.json)
observe.py    Stats, events and Prometheus metrics
pools.py      Pool routes
replies.py    Errors as HTTP answers
server.py     Serving the API
snapshots.py  Snapshot and fork routes
"""

from microbox.api.app import create_app

__all__ = ["create_app"]
