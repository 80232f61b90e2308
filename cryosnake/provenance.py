"""What a result depends on in code: a fingerprint of the cryosnake modules a job runs.

Snakemake reruns a job when its script changes, but the numerics live in this package, which
it does not see. Each rule therefore carries ``params: code=code_version(<module>)``: the
package version plus a hash of the source of ``<module>`` and of every cryosnake module it
imports, directly or not (found by reading the ``import`` statements, including those inside
functions). Editing the ML2D M-step changes the fingerprint of the ML2D rules and of nothing
else; editing :mod:`cryosnake.plots` reruns the plots only. A package imported as a whole
that picks its submodules at run time (the kernel backends) counts all of them.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

import cryosnake

PACKAGE = "cryosnake"
ROOT = Path(cryosnake.__file__).resolve().parent

#: Packages whose modules are chosen at run time (``kernels.get_backend``): importing the
#: package means depending on all of these.
DYNAMIC_IMPORTS = {
    "cryosnake.kernels": ("cryosnake.kernels.cpu", "cryosnake.kernels.cuda"),
}


def module_file(name: str) -> Path | None:
    """Source file of a cryosnake module or package (``None`` if there is none)."""
    parts = name.split(".")[1:]
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(name: str, path: Path) -> set[str]:
    """cryosnake modules named by the import statements of ``name`` (file ``path``)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # "from pkg import sub" may name a submodule
            found.update(f"{module}.{a.name}" for a in node.names if a.name != "*")
    out = set()
    for mod in found:
        if mod == PACKAGE or mod.startswith(PACKAGE + "."):
            # a.b.c imports a and a.b too (their __init__ runs)
            parts = mod.split(".")
            out.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return {m for m in out if module_file(m) is not None}


@functools.cache
def module_closure(name: str) -> tuple[str, ...]:
    """``name`` and every cryosnake module it needs, sorted."""
    seen, todo = set(), [name]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        path = module_file(mod)
        if path is None:
            raise ValueError(f"{mod} is not a module of {PACKAGE} ({ROOT})")
        seen.add(mod)
        todo.extend(_imports(mod, path) - seen)
        todo.extend(m for m in DYNAMIC_IMPORTS.get(mod, ()) if m not in seen)
    return tuple(sorted(seen))


def code_version(*names: str) -> str:
    """``"<version>+<hash>"``: the package version and the first 16 hex digits of the SHA-256
    of the sources of ``names`` and their closure (:func:`module_closure`)."""
    digest = hashlib.sha256()
    for mod in sorted({m for n in names for m in module_closure(n)}):
        digest.update(mod.encode() + b"\0" + module_file(mod).read_bytes() + b"\0")
    return f"{cryosnake.__version__}+{digest.hexdigest()[:16]}"
