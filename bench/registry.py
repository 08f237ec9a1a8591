"""Decorator-based plugin registries, one per plugin kind.

Usage::

    from bench.registry import register, get, names

    @register("loss", "mse")
    def make_mse(cfg): ...

    get("loss", "mse")      # -> make_mse
    names("loss")           # -> ["contrastive", "cosine", "mse"]

Plugins live in modules that register themselves on import; ``get``/``names`` import the
plugin package of a kind lazily (``bench.losses`` for ``loss`` ...) so heavy libraries are
only imported by the plugin that needs them, never by the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

KINDS: tuple[str, ...] = ("teacher", "student", "loss", "pse", "refiner", "dataset", "condition", "metric")

# Modules whose import registers the built-in plugins of each kind.
_PLUGIN_MODULES: dict[str, tuple[str, ...]] = {
    "teacher": ("bench.teachers",),
    "student": ("bench.students",),
    "loss": ("bench.losses",),
    "pse": ("bench.pse",),
    "refiner": ("bench.refine",),
    "dataset": ("bench.data.loaders", "bench.data.manifests"),
    "condition": ("bench.data.condition_spec",),
    "metric": ("bench.metrics.spec",),
}

_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
_LOADED: set[str] = set()

T = TypeVar("T")


class RegistryError(KeyError):
    """Unknown plugin kind or name; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class DuplicatePluginError(RegistryError, ValueError):
    """A plugin name is taken (by a built-in or another plugin); the message names both owners."""


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise RegistryError(f"unknown plugin kind {kind!r}; kinds are: {', '.join(KINDS)}")


ENTRY_POINT_GROUP = "pse_kd_bench.plugins"
_EXTERNAL_LOADED = False


def _load_builtins(kind: str) -> None:
    if kind in _LOADED:
        return
    for module in _PLUGIN_MODULES.get(kind, ()):
        importlib.import_module(module)
    _LOADED.add(kind)
    load_entry_points()


def load_builtins() -> None:
    """Register the built-in plugins of every kind (before users' plugins, so that a user's
    plugin taking a built-in name is the one refused, by its name)."""
    for kind in KINDS:
        _load_builtins(kind)


def load_entry_points() -> list[str]:
    """Import every module installed packages declare under the entry-point group
    ``pse_kd_bench.plugins`` (once per process); their ``@register`` decorators add users'
    teachers, students, losses, backbones, refiners and datasets. Returns the modules loaded.

    A plugin that fails to import is an error naming it (a silently missing plugin would make
    its name look unknown)."""
    global _EXTERNAL_LOADED
    if _EXTERNAL_LOADED:
        return []
    _EXTERNAL_LOADED = True
    import os
    from importlib import metadata

    load_builtins()
    env = [m for m in os.environ.get("PSE_KD_PLUGINS", "").split(",") if m.strip()]
    load_modules(env)  # --plugins modules, passed on to worker processes through the environment
    loaded = list(env)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except DuplicatePluginError as exc:
            raise DuplicatePluginError(f"plugin entry point {ep.name!r} ({ep.value}): {exc}") from None
        except Exception as exc:  # noqa: BLE001 - reported with the plugin's name
            raise RegistryError(f"plugin entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP!r} "
                                f"failed to import: {type(exc).__name__}: {exc}") from None
        loaded.append(ep.value)
    return loaded


def load_modules(modules: list[str]) -> None:
    """Import users' plugin modules by name (``--plugins my_pkg.plugins``); worker processes
    started later import them too (``$PSE_KD_PLUGINS``)."""
    import os

    if modules:
        load_builtins()
        have = [m for m in os.environ.get("PSE_KD_PLUGINS", "").split(",") if m]
        os.environ["PSE_KD_PLUGINS"] = ",".join(dict.fromkeys([*have, *modules]))
    for m in modules:
        try:
            importlib.import_module(m)
        except DuplicatePluginError as exc:
            raise DuplicatePluginError(f"--plugins module {m!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001
            raise RegistryError(f"--plugins module {m!r} failed to import: {type(exc).__name__}: {exc}") from None


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class/function decorator that registers ``obj`` as plugin ``name`` of ``kind``.

    Raises:
        RegistryError: ``kind`` is unknown.
        DuplicatePluginError: ``name`` is already registered for ``kind`` by another object
            (a RegistryError and a ValueError).
    """
    _check_kind(kind)

    def deco(obj: T) -> T:
        table = _REGISTRY[kind]
        prev = table.get(name)
        if prev is not None and prev is not obj and _qualname(prev) != _qualname(obj):
            raise DuplicatePluginError(f"{kind} plugin {name!r} is already registered by {_qualname(prev)}; "
                                       f"{_qualname(obj)} needs another name")
        table[name] = obj
        return obj

    return deco


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def get(kind: str, name: str) -> Any:
    """Return plugin ``name`` of ``kind``.

    Raises:
        RegistryError: unknown kind or name; the message lists the registered names.
    """
    _check_kind(kind)
    _load_builtins(kind)
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        raise RegistryError(
            f"unknown {kind} {name!r}; registered {kind}s: {', '.join(names(kind)) or '(none)'}"
        ) from None


def names(kind: str) -> list[str]:
    """Sorted names registered for ``kind``."""
    _check_kind(kind)
    _load_builtins(kind)
    return sorted(_REGISTRY[kind])
