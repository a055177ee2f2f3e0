"""Run a function right after a module is imported, without importing it ourselves.

The bootstrap must not import psycopg (or anything the program may never use)
just to patch it: that would cost start-up time and change what the program
loads. A finder first on ``sys.meta_path`` wraps the loader of the watched
module names, the way wrapt's post-import hooks and OpenTelemetry's
instrumentors do; every other import pays one dictionary lookup.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs milliseconds at start-up

if TYPE_CHECKING:  # importlib.abc alone costs a millisecond at start-up: duck-typed instead
    import importlib.machinery
    from collections.abc import Callable, Sequence
    from types import ModuleType
    from typing import Any

    Hook = Callable[[ModuleType], None]


class _AfterImport:
    """A ``sys.meta_path`` finder that finds nothing itself, only wraps loaders."""

    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = {}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        hook = self.hooks.get(fullname)
        if hook is None:
            return None
        spec: importlib.machinery.ModuleSpec | None = None
        for finder in sys.meta_path:  # the others find it (importlib.util costs milliseconds)
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader: Any = spec.loader
        exec_module = loader.exec_module

        def exec_then_hook(module: ModuleType) -> None:
            exec_module(module)
            self.hooks.pop(fullname, None)
            _run(hook, module)

        loader.exec_module = exec_then_hook
        return spec


_finder = _AfterImport()


def after_import(name: str, hook: Hook) -> None:
    """Call ``hook(module)`` once ``name`` is imported (now, if it already is)."""
    module = sys.modules.get(name)
    if module is not None:
        _run(hook, module)
        return
    _finder.hooks[name] = hook
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def cancel(name: str) -> None:
    _finder.hooks.pop(name, None)


def _run(hook: Hook, module: ModuleType) -> None:
    try:
        hook(module)
    except Exception as exc:  # a driver we do not understand must not break the program
        from peerwatch.protection.logs import logger

        logger().warning("could not hook %s: %s: %s", module.__name__, type(exc).__name__, exc)
