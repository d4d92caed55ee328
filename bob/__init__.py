"""bob: an open benchmark harness for pretrained vision backbones.

    import bob

    outcomes = bob.run("torchvision/mobilenet_v2", "linear-probe/animal-mnist", weights="pretrained")
    bob.list_tasks("knn/*")
    board = bob.leaderboard("results/raw", "results")

The functions of `bob.api` are reachable from here. Importing `bob` stays light (no torch, no pandas,
no suite registry): `bob.api` loads on the first use of one of its names.

`bob.sweep`, `bob.leaderboard` and `bob.check` name API functions and also modules (`bob/sweep/`,
`bob/leaderboard/`, `bob/check.py`): once such a module is imported, `bob.<name>` is that module,
made callable, and calling it calls the API function; `bob.sweep.driver` reaches the submodule.
"""

from __future__ import annotations

import sys
import types

__version__ = "0.1.0"

API = (
    "run",
    "plan_run",
    "sweep",
    "leaderboard",
    "check",
    "compare",
    "build_backbone",
    "list_backbones",
    "list_tasks",
    "list_datasets",
)
__all__ = [*API, "__version__"]


def __getattr__(name: str) -> object:
    """PEP 562: the API module loads on first use, so `import bob` (and `bob --help`) stays fast."""
    if name in API:
        from bob import api

        return getattr(api, name)
    raise AttributeError(f"module 'bob' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})


class _CallableModule(types.ModuleType):
    """A submodule named like an API function (`bob.sweep`, `bob.leaderboard`, `bob.check`): still the
    module, and calling it calls the function, so `bob.sweep(...)` means the same before and after
    the module is first imported."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        return __getattr__(self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The `bob` module: a submodule bound under an API name becomes callable (see _CallableModule)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in API and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
