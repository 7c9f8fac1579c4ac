"""Users' own code: model factories (``archs = ["MODULE:FUNCTION"]``) and plug-in modules
(``plugins = ["my_losses"]``) — imported by name, recorded, and shipped to the Ray workers.

`import_user_module` imports a module by its dotted name; one that is not importable as it stands
but lies in the working directory (``./NAME.py`` or ``./NAME/__init__.py``) is imported from there
(the directory is appended to ``sys.path``, so it never shadows an installed module). Every module
imported this way is recorded with the file it came from. Nothing is evaluated: names come from
configuration and are imported, as ``python -c "import NAME"`` would.

`user_runtime_env` turns the records into Ray's ``runtime_env`` (docs/data.md): the directory of
the recorded modules that are not installed (normally the working directory) as ``working_dir``
(data files, virtual environments, VCS folders and run directories excluded), any further such
directory's module as a ``py_modules`` entry, and a ``worker_process_setup_hook`` that imports every
recorded module in each worker process (`setup_worker`), so that loss families of plug-ins are
registered there before a job arrives. Ray uploads these files to the cluster, so a worker node
does not need them installed. Modules installed in the driver's environment (site-packages) are not
shipped: install them on the cluster too.
"""
from __future__ import annotations

import importlib
import os
import site
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

USER_MODULES_ENV = "EVOLOSS_USER_MODULES"
SETUP_HOOK = "evoloss.workers.user_code.setup_worker"
SHIP_EXCLUDES = [".git", ".hg", ".venv", "venv", "env", "__pycache__", "*.pyc", "runs", "*.npz", "*.npy", "*.pt",
                 "*.pth", "*.parquet", "*.csv", "*.safetensors", "*.ckpt", "**/ray/session_*"]
"""What the shipped working directory leaves out (datasets are read from their absolute paths). The last
pattern is every earlier run's Ray temp dir (``<run dir>/ray``): each holds an unpacked copy of the
package it was shipped, so runs written into the working directory would otherwise ship all earlier
ones again, the package growing with every run (measured: 4 MB, 28, 80, 238, 505 MB for five runs)."""

_RECORDED: dict[str, Path] = {}  # module name -> its file (or package directory)


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"{what}: {name!r} is not a module name (dotted identifiers, e.g. 'my_models')")
    return name


def import_user_module(name: str, what: str = "module") -> ModuleType:
    """Import module ``name`` (from the working directory if it is not importable otherwise) and record it.

    Raises:
        ValueError: not a module name, not found (naming the working directory), or its import failed.
    """
    name = _check_name(name, what)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top, cwd = name.split(".")[0], os.getcwd()
        local = Path(cwd, f"{top}.py").is_file() or Path(cwd, top, "__init__.py").is_file()
        if exc.name not in (top, name) or not local or cwd in sys.path:
            raise ValueError(f"{what}: module {name!r} cannot be imported ({exc}); put {top}.py in the working "
                             f"directory ({cwd}) or install it") from None
        sys.path.append(cwd)
        module = _import(name, what)
    except Exception as exc:  # the user's module itself raised: say so in one line
        raise ValueError(f"{what}: importing module {name!r} failed: {type(exc).__name__}: {exc}") from None
    _record(name, module)
    return module


def _import(name: str, what: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ValueError(f"{what}: importing module {name!r} failed: {type(exc).__name__}: {exc}") from None


def _record(name: str, module: ModuleType) -> None:
    """Remember the file of a module that is not installed (it must be shipped to the workers)."""
    top = sys.modules.get(name.split(".")[0], module)
    if top.__name__ in _RECORDED:
        return
    file = getattr(top, "__file__", None)
    if file is None or _installed(Path(file)):
        return
    path = Path(file).resolve()
    _RECORDED[top.__name__] = path.parent if path.name == "__init__.py" else path


def _installed(path: Path) -> bool:
    """True for files of the Python installation or an environment's site-packages."""
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")} | set(site.getsitepackages())
    resolved = str(path.resolve())
    return any(resolved.startswith(str(Path(r).resolve()) + os.sep) for r in roots if r)


def resolve_factory(spec: str) -> Callable[..., Any]:
    """The callable of ``"MODULE:FUNCTION"`` (the module imported by `import_user_module`)."""
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not attr.isidentifier():
        raise ValueError(f"architecture {spec!r}: a model factory is written MODULE:FUNCTION, e.g. 'my_models:make_net'")
    module = import_user_module(module_name, f"architecture {spec!r}")
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"architecture {spec!r}: module {module_name!r} has no function {attr!r}; define "
                         f"def {attr}(input_shape, num_classes) -> nn.Module in it")
    return factory


def load_plugins(names: Any) -> list[str]:
    """Import each plug-in module (registering its loss families, trainers, datasets...); their names."""
    return [import_user_module(n, f"plugins[{i}]").__name__ for i, n in enumerate(names)]


def recorded_modules() -> dict[str, Path]:
    """The recorded modules that still exist, name -> file or package directory."""
    return {name: path for name, path in _RECORDED.items() if path.exists()}


def clear_recorded() -> None:
    """Forget the recorded modules (tests)."""
    _RECORDED.clear()


def user_runtime_env(exclude: list[str | os.PathLike] | None = None) -> dict[str, Any]:
    """Ray's ``runtime_env`` entries that ship the recorded modules (module docstring); {} without any.

    ``exclude``: further paths kept out of the shipped directory (e.g. the run's Ray temp dir).
    """
    modules = recorded_modules()
    if not modules:
        return {}
    dirs = list(dict.fromkeys(p.parent for p in modules.values()))
    working_dir = dirs[0]
    py_modules = [str(p) for p in modules.values() if p.parent != working_dir]
    excludes = list(SHIP_EXCLUDES)
    for path in exclude or []:
        absolute = Path(path).absolute()
        if absolute.is_relative_to(working_dir):
            excludes.append("/" + str(absolute.relative_to(working_dir)))
    env: dict[str, Any] = {"working_dir": str(working_dir), "excludes": excludes,
                           "worker_process_setup_hook": SETUP_HOOK,
                           "env_vars": {USER_MODULES_ENV: ",".join(modules)}}
    if py_modules:
        env["py_modules"] = py_modules
    return env


def setup_worker() -> None:
    """Ray's worker setup hook: import every module named in ``$EVOLOSS_USER_MODULES``."""
    for name in filter(None, os.environ.get(USER_MODULES_ENV, "").split(",")):
        import_user_module(name, "worker setup")


__all__ = ["SETUP_HOOK", "USER_MODULES_ENV", "clear_recorded", "import_user_module", "load_plugins",
           "recorded_modules", "resolve_factory", "setup_worker", "user_runtime_env"]
