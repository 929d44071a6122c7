"""Which ``Tether`` app a command runs (``--app module:attr``, or the demo) and its settings."""

import importlib
import sys
from pathlib import Path
from types import ModuleType

from tether.app import Tether
from tether.errors import UsageError
from tether.settings import Settings


def build_settings(*, database_url: str | None = None, redis_url: str | None = None) -> Settings:
    """Settings from the environment, with the options given on the command line on top."""
    settings = Settings()
    if overrides := _given(database_url=database_url, redis_url=redis_url):
        # Validated like the environment: the options are the same fields from another source.
        settings = Settings.model_validate({**settings.model_dump(), **overrides})
    return settings


def load_app(
    spec: str | None, *, database_url: str | None = None, redis_url: str | None = None
) -> Tether:
    """The app named by ``spec`` (``module:attr``), or the demo app when ``spec`` is None.

    ``attr`` is a ``Tether`` or a function returning one. The app keeps its own settings except
    where the command line set one (``database_url``, ``redis_url``).

    Raises:
        UsageError: ``spec`` is malformed, can't be imported, or names no ``Tether``.
    """
    if spec is None:
        from tether.demo import demo_app

        return demo_app(build_settings(database_url=database_url, redis_url=redis_url))
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--app must look like module:attribute, got {spec!r}", app=spec)
    target: object = _import(module_name, spec)
    for name in attr.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise UsageError(f"{module_name!r} has no attribute {attr!r} (--app {spec})") from None
    if callable(target) and not isinstance(target, Tether):
        target = target()
    if not isinstance(target, Tether):
        raise UsageError(f"--app {spec} is a {type(target).__name__}, not a Tether app", app=spec)
    if overrides := _given(database_url=database_url, redis_url=redis_url):
        target.settings = target.settings.model_copy(update=overrides)
    return target


def shown_url(url: str) -> str:
    """A database URL as it may be shown: the password hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if url == "memory":
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def _import(module_name: str, spec: str) -> ModuleType:
    # Like uvicorn: an app module in the current directory is importable without installing it.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the module we were asked for; a missing import inside it is the app's own bug.
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise UsageError(f"no module named {module_name!r} (--app {spec})", app=spec) from exc
        raise


def _given(**options: str | None) -> dict[str, str]:
    return {name: value for name, value in options.items() if value is not None}
