"""The HTTP API (`microbox serve`): a FastAPI front end over the SDK. See docs/api.md."""

from microbox.api.app import create_app

__all__ = ["create_app"]
