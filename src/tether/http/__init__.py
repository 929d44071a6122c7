"""tether over HTTP: ``create_app`` builds the FastAPI app; ``check_bind`` guards local mode."""

from tether.http.app import create_app
from tether.http.auth import check_bind

__all__ = ["check_bind", "create_app"]
