"""tools/check_shape.py: each rule finds a planted violation and passes a clean package."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "check_shape.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("check_shape", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_shape", module)
    spec.loader.exec_module(module)
    return module


shape = _load_tool()


def make_package(tmp_path: Path, files: dict[str, str], name: str = "pkg") -> Path:
    """Write ``files`` (paths relative to the package) under ``tmp_path/name``."""
    root = tmp_path / name
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    for folder in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    return root


CLEAN = {
    "__init__.py": "from .core import Thing\n",
    "core.py": """
        from pkg.util import helper


        class Thing:
            def __init__(self):
                self._value = helper()

            def copy_from(self, other: "Thing") -> None:
                self._value = other._value  # this module owns _value

            def __repr__(self):
                return f"Thing({self._value})"
        """,
    "util.py": """
        def helper():
            return 1


        def _private():
            return 2


        def uses_private():
            return _private()
        """,
    "sub/__init__.py": "",
    "sub/_impl.py": "X = 1\n",
    "sub/user.py": """
        from . import _impl  # a private module, imported inside its own package


        def get():
            from pkg.core import Thing  # lazy, no cycle

            return Thing, _impl.X
        """,
}


def findings(report, category):
    return [f for f in report.findings if f.category == category]


def test_clean_package_passes(tmp_path):
    report = shape.check(make_package(tmp_path, CLEAN))
    assert report.findings == [], [str(f) for f in report.findings]
    assert not report.failed and report.modules == 6
    assert shape.main([str(tmp_path / "pkg"), "-q"]) == 0


def test_cycle_through_lazy_import_is_found(tmp_path):
    files = dict(CLEAN)
    files["util.py"] = """
        def helper():
            from pkg.sub.user import get  # lazy: counts

            return 1
        """
    report = shape.check(make_package(tmp_path, files))
    (cycle,) = findings(report, "cycle")
    assert report.cycles == [["pkg.core", "pkg.sub.user", "pkg.util"]]
    assert cycle.path == "pkg/core.py" and cycle.line == 2
    assert "pkg.util -> pkg.sub.user (pkg/util.py:3)" in cycle.message


def test_reexport_in_package_init_is_an_edge(tmp_path):
    """``pkg/__init__`` re-exports core.Thing; core importing ``from pkg import x`` cycles."""
    files = dict(CLEAN)
    files["core.py"] = "from pkg import util\nfrom pkg import sub\n\nclass Thing: ...\n"
    report = shape.check(make_package(tmp_path, files))
    assert report.cycles == []  # pkg.util and pkg.sub are modules: edges to them, not to pkg
    files["core.py"] = "from pkg import Thing as T\n\nclass Thing: ...\n"
    report = shape.check(make_package(tmp_path, files))
    assert report.cycles == [["pkg", "pkg.core"]]


def test_relative_imports_resolve_and_type_checking_counts(tmp_path):
    files = {
        "a/__init__.py": "",
        "a/one.py": "from .two import f\n",
        "a/two.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from ..a import one\n"
            "def f(): ...\n"
        ),
    }
    report = shape.check(make_package(tmp_path, files))
    assert report.cycles == [["pkg.a.one", "pkg.a.two"]]


def test_private_name_import_is_found(tmp_path):
    files = dict(CLEAN)
    files["core.py"] = "from pkg.util import _private\nfrom .util import helper as _h\n"
    files["sub/user.py"] = "from ..util import _private, helper\n"
    report = shape.check(make_package(tmp_path, files))
    found = [(f.path, f.line) for f in findings(report, "private-import")]
    assert found == [("pkg/core.py", 1), ("pkg/sub/user.py", 1)]  # an alias _h is fine
    assert "'_private' of pkg.util" in findings(report, "private-import")[0].message


def test_private_module_import_from_outside_its_package_is_found(tmp_path):
    files = dict(CLEAN)
    files["core.py"] = "from pkg.sub import _impl\nimport pkg.sub._impl\n"
    report = shape.check(make_package(tmp_path, files))
    found = findings(report, "private-import")
    assert [(f.path, f.line) for f in found] == [("pkg/core.py", 1), ("pkg/core.py", 2)]
    assert "private module pkg.sub._impl from outside pkg.sub" in found[0].message


def test_reach_in_reads_and_writes_are_found(tmp_path):
    files = dict(CLEAN)
    files["util.py"] = """
        from pkg.core import Thing


        def helper():
            return 1


        def poke(thing: Thing):
            thing._value = 3
            return thing._value, thing.__class__, thing._replace
        """
    report = shape.check(make_package(tmp_path, files))
    found = findings(report, "reach-in")
    assert [(f.path, f.line) for f in found] == [("pkg/util.py", 10), ("pkg/util.py", 11)]
    assert found[0].message.startswith("writes thing._value")
    assert found[1].message.startswith("reads thing._value")


def test_self_cls_super_and_owned_names_are_not_reach_ins(tmp_path):
    files = {
        "base.py": """
            class Base:
                _registry = {}

                def _hook(self):
                    return 1
            """,
        "child.py": """
            from pkg.base import Base


            class Child(Base):
                def run(self):
                    return self._hook(), super()._hook(), type(self)._registry, self._x

                @classmethod
                def make(cls):
                    return cls._registry
            """,
    }
    assert findings(shape.check(make_package(tmp_path, files)), "reach-in") == []


def test_sizes_over_the_limits_are_found(tmp_path):
    big_class = "class Big:\n" + "    x = 1\n" * 12
    files = {"big.py": big_class + "\n" * 5, "small.py": "class Small:\n    x = 1\n"}
    report = shape.check(make_package(tmp_path, files), max_module_lines=15, max_class_lines=10)
    found = findings(report, "size")
    assert sorted(f.message for f in found) == [
        "class Big has 13 lines (limit 10)",
        "module has 18 lines (limit 15)",
    ]
    assert report.largest_module == ("pkg/big.py", 18)
    assert report.largest_class == ("pkg/big.py:Big", 13)
    report = shape.check(make_package(tmp_path, files), max_module_lines=18, max_class_lines=13)
    assert findings(report, "size") == []


def test_sniffing_is_found_and_allowed_only_with_a_reason(tmp_path):
    files = {
        "sniff.py": """
            import torch


            def f(ds, name):
                a = hasattr(ds, "targets")
                b = getattr(ds, "fingerprint", None)
                c = getattr(ds, name)  # computed name: data access, not sniffing
                d = getattr(ds, "targets", None)  # shape: allow user datasets' .targets
                e = hasattr(torch, "_k")  # shape: allow
                g = torch._k(  # shape: allow private torch kernel, guarded above
                    1
                )
                return a, b, c, d, e, g
            """
    }
    report = shape.check(make_package(tmp_path, files))
    found = findings(report, "sniffing")
    assert [f.line for f in found] == [6, 7, 10]
    assert "needs a reason" in found[2].message
    assert report.allowed == {"sniffing": 1, "reach-in": 1}
    assert findings(report, "reach-in") == []
    summary = report.summary()
    assert "sniffing" in summary and "largest module: pkg/sniff.py" in summary


def test_command_line_exit_status_and_output(tmp_path):
    files = dict(CLEAN)
    files["core.py"] = "from pkg.util import _private\n"
    root = make_package(tmp_path, files)
    run = subprocess.run(
        [sys.executable, str(TOOL), str(root)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 1
    assert "pkg/core.py:1: private-import:" in run.stdout
    assert "private-import         1" in run.stdout
    (root / "core.py").write_text("from pkg.util import helper\n")
    run = subprocess.run(
        [sys.executable, str(TOOL), str(root)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout
    not_a_package = tmp_path / "empty"
    not_a_package.mkdir()
    assert shape.main([str(not_a_package)]) == 2


def test_memstore_has_the_shape_of_issue_7():
    report = shape.check(ROOT / "memstore")
    assert report.findings == [], "\n".join(map(str, report.findings))
