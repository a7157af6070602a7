"""The import rules of ARCHITECTURE.md, read from the source (every import statement, module level or inside a
function), so a forbidden import fails here before it fails a user."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ddpm_ext"

# copied into saved model folders and loaded there as remote code: torch, numpy, diffusers (+ huggingface_hub) only
SELF_CONTAINED = ("ddpm_ext.schedulers.scheduling_ddpm_ext", "ddpm_ext.pipelines.pipeline_ddpm_ext")
# the building blocks below training: what each may import from ddpm_ext (modules and their subpackages)
ALLOWED = {
    "ddpm_ext.data": (),
    "ddpm_ext.resample": (),
    "ddpm_ext.losses": ("ddpm_ext.schedulers",),
}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_modules(root: Path) -> dict:
    return {_module_name(p, root): p for p in sorted((root / "ddpm_ext").rglob("*.py"))}


def imported_modules(source: str, module: str, is_package: bool = False, known: frozenset = frozenset()) -> set:
    """Every module `source` (the code of `module`) imports, as absolute names. `from X import name` counts as X.name
    where that is one of the `known` modules (a submodule), else as X."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in known)
    return found


def _imports_of_package(root: Path = ROOT) -> dict:
    modules = _package_modules(root)
    known = frozenset(modules)
    return {
        name: imported_modules(path.read_text(), name, path.name == "__init__.py", known)
        for name, path in modules.items()
    }


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(imports: dict) -> list:
    """The broken rules, one line each, for a {module: imported modules} map of the package."""
    found = []
    for module, targets in sorted(imports.items()):
        ours = sorted(t for t in targets if _within(t, "ddpm_ext"))
        if module in SELF_CONTAINED and ours:
            found.append(f"{module} is self-contained (remote code) but imports {', '.join(ours)}")
        found.extend(
            f"{module} imports {t}: nothing may import the command line" for t in ours if _within(t, "ddpm_ext.cli")
        )
        if not _within(module, "ddpm_ext.training") and module != "ddpm_ext.cli":
            found.extend(
                f"{module} imports {t}: only the command line and training itself may import training"
                for t in ours
                if _within(t, "ddpm_ext.training")
            )
        if module in ALLOWED:
            allowed = ALLOWED[module]
            found.extend(
                f"{module} imports {t}; it may import only {', '.join(allowed) or 'nothing from ddpm_ext'}"
                for t in ours
                if not any(_within(t, a) for a in allowed)
            )
    return found


def test_the_package_keeps_the_import_rules():
    imports = _imports_of_package()
    assert set(SELF_CONTAINED) | set(ALLOWED) <= set(imports), "a module named in the rules no longer exists"
    assert violations(imports) == []


def test_the_import_reader_resolves_relative_absolute_and_function_level_imports():
    known = frozenset({"ddpm_ext.data", "ddpm_ext.cli", "ddpm_ext.training.config"})
    source = (
        "import torch\nfrom . import data as d\nfrom ..losses import LOSS_TYPES\n"
        "def f():\n    from ddpm_ext.cli import main\n    from .config import TrainingConfig\n"
    )
    found = imported_modules(source, "ddpm_ext.training.loop", known=known)
    assert found == {
        "torch",
        "ddpm_ext.training",
        "ddpm_ext.losses",
        "ddpm_ext.cli",
        "ddpm_ext.training.config",
    }
    assert imported_modules("from . import data\n", "ddpm_ext", is_package=True, known=known) == {
        "ddpm_ext",
        "ddpm_ext.data",
    }


@pytest.mark.parametrize(
    "module, source, broken",
    [
        ("ddpm_ext.schedulers.scheduling_ddpm_ext", "def f():\n    from ..losses import x\n", "self-contained"),
        ("ddpm_ext.pipelines.pipeline_ddpm_ext", "import ddpm_ext\n", "self-contained"),
        ("ddpm_ext.hub", "from .cli import main\n", "command line"),
        ("ddpm_ext.evaluation", "from .training import train\n", "only the command line and training"),
        ("ddpm_ext.data", "from .evaluation import x\n", "may import only nothing"),
        ("ddpm_ext.losses", "from .resample import x\n", "may import only ddpm_ext.schedulers"),
    ],
)
def test_each_rule_fails_on_a_forbidden_import(module, source, broken):
    imports = _imports_of_package()
    imports[module] = imported_modules(source, module, known=frozenset(imports))
    found = violations(imports)
    assert len(found) == 1 and broken in found[0], found


def test_allowed_imports_are_not_flagged():
    imports = _imports_of_package()
    imports["ddpm_ext.training.loop"] = {"ddpm_ext.losses", "ddpm_ext.training.config", "ddpm_ext.pipelines"}
    imports["ddpm_ext.cli"] = {"ddpm_ext.training", "ddpm_ext.hub"}
    imports["ddpm_ext.losses"] = {"ddpm_ext.schedulers.scheduling_ddpm_ext", "torch"}
    assert violations(imports) == []
