"""Package discovery for setuptools; the project's metadata lives in pyproject.toml.

`backbones/` and `tasks/` ship as `bob.backbones` and `bob.tasks` (generic top-level names would
shadow other packages), so their packages are found here, under those names: adding a suite folder
needs no edit anywhere.
"""

from setuptools import find_packages, setup

ROOTS = {"bob": "bob", "bob.backbones": "backbones", "bob.tasks": "tasks"}


def packages() -> list[str]:
    found = find_packages(include=["bob", "bob.*"])
    for name, folder in ROOTS.items():
        if name != "bob":
            found += [name] + [f"{name}.{sub}" for sub in find_packages(where=folder)]
    return sorted(set(found))


setup(package_dir=ROOTS, packages=packages())
