"""Measure the shape of a Python package (memstore by default) from its source, with ``ast``.

Usage::

    python tools/check_shape.py [PACKAGE_DIR] [--max-module-lines 500] [--max-class-lines 300]
                                [--quiet]

Every module of the package is read (subpackages included; nothing is imported). Findings are
printed as ``path:line: category: message``, then a summary table; the exit status is 1 when
there is any finding, else 0. The categories:

``cycle``
    Import cycles between the package's modules. The graph has one node per module (a
    package is its ``__init__``) and an edge for every import statement anywhere in a module
    — at the top, inside a function (lazy), or under ``if TYPE_CHECKING:`` (as import-linter
    counts them). ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to
    ``a.b`` (so a package ``__init__`` that re-exports ``from .m import X`` has an edge to
    ``m``); ``import a.b.c`` is an edge to ``a.b.c`` only (the parent packages Python also
    runs are not edges, or every module would cycle through the root ``__init__``). Each
    strongly connected component of more than one module is reported once, with the edges
    that form it.
``private-import``
    ``from X import _name`` (or ``from .x import _name``) where ``_name`` is a private
    (single leading underscore, not dunder) name of another module. Importing a private
    *module* (``from . import _layout``, ``import pkg._validation``) is allowed only from
    inside the package that holds it (``pkg._validation`` from anywhere in ``pkg``).
``reach-in``
    Reads or writes of ``obj._name`` where ``obj`` is not ``self``, ``cls``, ``super()`` or
    ``type(self)``, and ``_name`` is private. An AST cannot know ``obj``'s class, so the rule
    is: a private attribute name is the *own* business of the module that defines it — as a
    name in a class body (method, class attribute) or as ``self._name = ...`` /
    ``cls._name = ...`` somewhere in the module. Touching ``obj._name`` is fine in a module
    that owns ``_name`` and a reach-in anywhere else (``store._manifest`` in
    ``maintenance.py``, ``torch._private_kernel``). The public names of namedtuples
    (``_replace``, ``_asdict``, ``_fields``, ``_make``, ``_field_defaults``) are not private.
``size``
    Modules over ``--max-module-lines`` lines and classes over ``--max-class-lines`` lines
    (from the ``class`` line to the class's last line, nested classes counted on their own).
``sniffing``
    Capability sniffing: any ``hasattr(...)`` call, and ``getattr(obj, "literal", ...)`` with
    a string literal as the name (``getattr(obj, name)`` with a computed name is data
    access, not sniffing). Some are legitimate — a guard for a private torch API, reading a
    user dataset's ``.targets`` — and are whitelisted by a comment on one of the call's lines:
    ``# shape: allow <reason>``. The reason is required; an allow comment without one is a
    finding itself. The same comment also whitelists a ``reach-in`` on that line (e.g. the
    call of that private torch API). Allowed lines are counted in the summary, not reported.

The rules are deliberately simple so that a finding can be read off the source line; they
under-report (a module that owns ``_state`` may still touch another class's ``_state``)
rather than guess at types.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Finding", "Report", "check", "main"]

CATEGORIES = ("cycle", "private-import", "reach-in", "size", "sniffing")
NAMEDTUPLE_API = frozenset({"_replace", "_asdict", "_fields", "_make", "_field_defaults"})
SELF_NAMES = frozenset({"self", "cls"})
ALLOW = re.compile(r"#\s*shape:\s*allow\b(?P<reason>.*)$")


@dataclass(frozen=True)
class Finding:
    """One violation: where it is and what it is."""

    category: str
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.category}: {self.message}"


@dataclass
class Report:
    """All findings of one run, plus the sizes the summary shows."""

    findings: list[Finding] = field(default_factory=list)
    allowed: dict[str, int] = field(default_factory=dict)
    modules: int = 0
    largest_module: tuple[str, int] = ("", 0)
    largest_class: tuple[str, int] = ("", 0)
    cycles: list[list[str]] = field(default_factory=list)

    def count(self, category: str) -> int:
        return sum(1 for f in self.findings if f.category == category)

    @property
    def failed(self) -> bool:
        return bool(self.findings)

    def summary(self) -> str:
        rows = [("category", "findings", "allowed")]
        for cat in CATEGORIES:
            rows.append((cat, str(self.count(cat)), str(self.allowed.get(cat, 0))))
        width = max(len(r[0]) for r in rows)
        lines = [f"{a:<{width}}  {b:>8}  {c:>7}" for a, b, c in rows]
        if self.cycles:
            sizes = ", ".join(str(len(c)) for c in self.cycles)
            lines.append(f"cycles: {len(self.cycles)} (modules in each: {sizes})")
        lines.append(f"modules: {self.modules}")
        lines.append(f"largest module: {self.largest_module[0]} ({self.largest_module[1]} lines)")
        lines.append(f"largest class: {self.largest_class[0]} ({self.largest_class[1]} lines)")
        return "\n".join(lines)


@dataclass
class _Module:
    name: str
    path: Path
    rel: str
    is_package: bool
    tree: ast.Module
    lines: int
    comments: dict[int, str]


def _discover(package_dir: Path) -> dict[str, _Module]:
    root = package_dir.resolve()
    base = root.parent
    modules: dict[str, _Module] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(base).with_suffix("").parts
        if any(p == "__pycache__" for p in parts):
            continue
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        text = path.read_text(encoding="utf-8")
        modules[name] = _Module(
            name=name,
            path=path,
            rel=str(path.relative_to(base)),
            is_package=is_package,
            tree=ast.parse(text, filename=str(path)),
            lines=len(text.splitlines()),
            comments=_comments(text),
        )
    return modules


def _comments(text: str) -> dict[int, str]:
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string
    except (tokenize.TokenError, IndentationError):
        pass
    return out


def _resolve_from(mod: _Module, node: ast.ImportFrom) -> str:
    """The absolute module name of a ``from ... import`` statement's source."""
    if node.level == 0:
        return node.module or ""
    package = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    if node.level > 1:
        package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, node.module] if node.module else package)


def _nearest(name: str, modules: dict[str, _Module]) -> str | None:
    """``name`` or its nearest ancestor that is a module of the package."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _allow(mod: _Module, node: ast.AST) -> tuple[bool, str | None]:
    """Whether an allow comment covers ``node``'s lines, and its reason (None if missing)."""
    for line in range(node.lineno, (node.end_lineno or node.lineno) + 1):
        match = ALLOW.search(mod.comments.get(line, ""))
        if match:
            reason = match.group("reason").strip(" :-")
            return True, reason or None
    return False, None


def _imports(mod: _Module, modules: dict[str, _Module]):
    """Yield ``(target_module, line, imported_name_or_None, node)`` for every import."""
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _nearest(alias.name, modules)
                if target is not None:
                    yield target, node.lineno, None, alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _resolve_from(mod, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    yield sub, node.lineno, None, sub
                else:
                    target = _nearest(source, modules)
                    if target is not None:
                        yield target, node.lineno, alias.name, source


def _check_imports(modules: dict[str, _Module], report: Report) -> None:
    edges: dict[str, dict[str, int]] = {name: {} for name in modules}
    for mod in modules.values():
        for target, line, name, full in _imports(mod, modules):
            if target != mod.name:
                edges[mod.name].setdefault(target, line)
            if name is not None and _is_private(name) and target != mod.name:
                report.findings.append(
                    Finding(
                        "private-import",
                        mod.rel,
                        line,
                        f"imports private name {name!r} of {target}",
                    )
                )
            if name is None:  # a module: private modules stay inside their package
                parts = full.split(".")
                for i, part in enumerate(parts):
                    owner = ".".join(parts[:i])
                    if _is_private(part) and not (
                        mod.name == owner or mod.name.startswith(owner + ".")
                    ):
                        report.findings.append(
                            Finding(
                                "private-import",
                                mod.rel,
                                line,
                                f"imports private module {'.'.join(parts[: i + 1])} "
                                f"from outside {owner}",
                            )
                        )
                        break
    for component in _strongly_connected(edges):
        members = set(component)
        report.cycles.append(sorted(component))
        inner = [
            (a, b, line)
            for a in sorted(component)
            for b, line in sorted(edges[a].items())
            if b in members
        ]
        first, _, first_line = inner[0]
        report.findings.append(
            Finding(
                "cycle",
                modules[first].rel,
                first_line,
                f"import cycle between {len(component)} modules: "
                + "; ".join(f"{a} -> {b} ({modules[a].rel}:{n})" for a, b, n in inner),
            )
        )


def _strongly_connected(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components of more than one node, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return sorted(out)


def _owned_private_names(tree: ast.Module) -> set[str]:
    owned: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    owned.add(item.name)
                elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    for target in targets:
                        for sub in ast.walk(target):
                            if isinstance(sub, ast.Name):
                                owned.add(sub.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            if isinstance(node.value, ast.Name) and node.value.id in SELF_NAMES:
                owned.add(node.attr)
    return {name for name in owned if _is_private(name)}


def _is_self_like(value: ast.expr) -> bool:
    if isinstance(value, ast.Name):
        return value.id in SELF_NAMES
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        if value.func.id == "super":
            return True
        if value.func.id == "type" and len(value.args) == 1:
            return _is_self_like(value.args[0])
    return False


def _check_attributes(mod: _Module, report: Report) -> None:
    owned = _owned_private_names(mod.tree)
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            if not _is_private(name) or name in NAMEDTUPLE_API or name in owned:
                continue
            if _is_self_like(node.value):
                continue
            allowed, reason = _allow(mod, node)
            if allowed and reason:
                report.allowed["reach-in"] = report.allowed.get("reach-in", 0) + 1
                continue
            action = "writes" if isinstance(node.ctx, (ast.Store, ast.Del)) else "reads"
            report.findings.append(
                Finding(
                    "reach-in",
                    mod.rel,
                    node.lineno,
                    f"{action} {ast.unparse(node)} (private attribute not defined in this module)"
                    + ("; '# shape: allow' needs a reason" if allowed else ""),
                )
            )
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            sniff = node.func.id == "hasattr" or (
                node.func.id == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            )
            if not sniff:
                continue
            allowed, reason = _allow(mod, node)
            if allowed and reason:
                report.allowed["sniffing"] = report.allowed.get("sniffing", 0) + 1
                continue
            call = ast.unparse(node)
            report.findings.append(
                Finding(
                    "sniffing",
                    mod.rel,
                    node.lineno,
                    f"{call[:80]}"
                    + (
                        " ('# shape: allow' needs a reason)"
                        if allowed
                        else " (declare a Protocol, or '# shape: allow <reason>')"
                    ),
                )
            )


def _check_sizes(mod: _Module, report: Report, max_module: int, max_class: int) -> None:
    if mod.lines > report.largest_module[1]:
        report.largest_module = (mod.rel, mod.lines)
    if mod.lines > max_module:
        report.findings.append(
            Finding("size", mod.rel, 1, f"module has {mod.lines} lines (limit {max_module})")
        )
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.ClassDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            if size > report.largest_class[1]:
                report.largest_class = (f"{mod.rel}:{node.name}", size)
            if size > max_class:
                report.findings.append(
                    Finding(
                        "size",
                        mod.rel,
                        node.lineno,
                        f"class {node.name} has {size} lines (limit {max_class})",
                    )
                )


def check(
    package_dir: str | Path, max_module_lines: int = 500, max_class_lines: int = 300
) -> Report:
    """Check the package at ``package_dir`` (the folder holding its ``__init__.py``)."""
    package_dir = Path(package_dir)
    if not (package_dir / "__init__.py").is_file():
        raise ValueError(f"{package_dir} is not a package (no __init__.py).")
    modules = _discover(package_dir)
    report = Report(modules=len(modules))
    _check_imports(modules, report)
    for mod in modules.values():
        _check_attributes(mod, report)
        _check_sizes(mod, report, max_module_lines, max_class_lines)
    order = {cat: i for i, cat in enumerate(CATEGORIES)}
    report.findings.sort(key=lambda f: (order[f.category], f.path, f.line, f.message))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parent.parent / "memstore"
    parser.add_argument("package_dir", nargs="?", default=str(default))
    parser.add_argument("--max-module-lines", type=int, default=500)
    parser.add_argument("--max-class-lines", type=int, default=300)
    parser.add_argument("--quiet", "-q", action="store_true", help="print the summary only")
    args = parser.parse_args(argv)
    try:
        report = check(args.package_dir, args.max_module_lines, args.max_class_lines)
    except (ValueError, SyntaxError) as err:
        print(f"check_shape: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        for finding in report.findings:
            print(finding)
        if report.findings:
            print()
    print(report.summary())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
