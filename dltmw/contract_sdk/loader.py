"""Loading a contract package from its bytes into an isolated, metered module namespace.

`load_package(data)` parses the canonical archive (`core/contract_package.py`), runs the static
check (`core/contract_check.py`; any finding refuses the package with the full list), and
imports the modules with a custom importlib loader:

- module names are prefixed by the package id (`dltmw_contract_<sha256>.<module>`), so two
  versions of one contract, or two contracts with a module of the same name, never meet; no
  `sys.path` change, nothing read from disk. The modules are registered in `sys.modules` under
  those names only (dataclasses and typing resolve annotations through it).
- each module's AST is instrumented for metering (`core/metering.py`) before it is compiled;
  one `Meter` per package, and every invocation runs under `ctx.step_budget` and `ctx.expired`.
- the modules see restricted builtins: no open/eval/exec/compile/print/…, an `__import__` that
  only admits the allowlist and the package's own modules, and hands out *proxies* of allowed
  modules that hold their public non-module attributes only (`dataclasses.sys` is not there),
  and a `getattr` family that refuses names beginning with "_". This repeats the static check
  at run time; neither is a sandbox against a hostile author (see contract_check.py).

The entry point (`module:Class` in the manifest) must be a subclass of the SDK's `Contract`;
its `name` is the manifest's. The result is a core `Contract` that `simulate` runs like any
other. A UTXO contract's package (`"kind": "utxo"`) names a function instead
(`module:verify`), loaded the same way and run as a `utxo_runner.MeteredVerify`; such a
package has no channel `contract` and a channel one no `verify`.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dltmw.contract_sdk.base import Contract as SdkContract
from dltmw.contract_sdk.utxo_runner import MeteredVerify
from dltmw.core.contract import Context, Contract, ContractFunction
from dltmw.core.contract_check import FORBIDDEN_NAMES, allowed_module, check_sources
from dltmw.core.contract_package import UTXO_KIND, Manifest, Package, PackageError, read_package
from dltmw.core.metering import (
    ITER_NAME,
    LOAD_STEP_BUDGET,
    STEP_NAME,
    Meter,
    StepBudgetExceeded,
    instrument,
)

PREFIX = "dltmw_contract_"


class PackageRefused(PackageError):
    """The static check found constructs a contract may not use (all listed)."""

    def __init__(self, findings: Sequence[object]) -> None:
        listed = "; ".join(str(f) for f in findings)
        super().__init__("static_check", f"the package uses what contracts may not: {listed}")
        self.findings = list(findings)


@dataclass(frozen=True)
class LoadedPackage:
    """A package ready to run: its id, manifest and contract (a channel contract) or verify
    (a UTXO contract)."""

    package_id: str
    manifest: Manifest
    contract: Contract | None
    functions: dict[str, str]  # name -> "transaction" | "query" (| "utxo" for verify)
    verify: MeteredVerify | None = None


class MeteredContract(Contract):
    """A packaged contract: every invocation runs under the package's meter."""

    def __init__(self, inner: SdkContract, meter: Meter, name: str) -> None:
        self.name = name
        self._inner = inner
        self._meter = meter

    def function(self, name: str) -> ContractFunction | None:
        """The inner contract's function, metered."""
        fn = self._inner.function(name)
        if fn is None:
            return None
        meter = self._meter

        def call(ctx: Context, args: Sequence[bytes]) -> bytes:
            return meter.run(ctx.step_budget, ctx.expired, fn, ctx, args)

        return call


def _proxy(module: types.ModuleType) -> types.ModuleType:
    """A copy of `module` holding its public attributes that are not modules."""
    proxy = types.ModuleType(module.__name__)
    for key, value in vars(module).items():
        if not key.startswith("_") and not isinstance(value, types.ModuleType):
            setattr(proxy, key, value)
    return proxy


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(obj: object, name: str, *rest: object) -> Any:
        if not isinstance(name, str) or name.startswith("_"):
            raise AttributeError(f"contracts may not use attribute {name!r}")
        return fn(obj, name, *rest)

    return guarded


class _PackageLoader(importlib.abc.Loader):
    """Executes one module of a package: instrumented, with the package's builtins."""

    def __init__(self, source: str, filename: str, safe_builtins: dict[str, Any]) -> None:
        self.source, self.filename, self.builtins = source, filename, safe_builtins

    def exec_module(self, module: types.ModuleType) -> None:
        """Compile the instrumented AST and run it in the module's namespace."""
        code = compile(instrument(self.source, self.filename), self.filename, "exec")
        module.__dict__["__builtins__"] = self.builtins
        exec(code, module.__dict__)


class _Namespace:
    """The modules of one loaded package and the import function its code sees."""

    def __init__(self, package_id: str, files: Mapping[str, str], meter: Meter) -> None:
        self.root_name = PREFIX + package_id
        self.files = files
        self.meter = meter
        self.proxies: dict[str, types.ModuleType] = {}
        self.modules: dict[str, types.ModuleType] = {}
        self.builtins = self._builtins()
        root = types.ModuleType(self.root_name)
        root.__path__ = []
        root.__package__ = self.root_name
        self.root = root
        sys.modules[self.root_name] = root

    def _builtins(self) -> dict[str, Any]:
        safe = {k: v for k, v in vars(builtins).items() if k not in FORBIDDEN_NAMES}
        safe.update(
            __import__=self.import_,
            getattr=_guarded(getattr),
            setattr=_guarded(setattr),
            delattr=_guarded(delattr),
            hasattr=_guarded(hasattr),
        )
        safe[STEP_NAME] = self.meter.step
        safe[ITER_NAME] = self.meter.iterate
        return safe

    def module(self, name: str) -> types.ModuleType:
        """The package module `name` (a file name without .py), loaded once."""
        full = f"{self.root_name}.{name}"
        found = self.modules.get(name)
        if found is not None:
            return found
        filename = f"{name}.py"
        loader = _PackageLoader(self.files[filename], filename, self.builtins)
        spec = importlib.util.spec_from_loader(full, loader, origin=filename)
        if spec is None:
            raise ImportError(f"cannot load {filename}")
        module = importlib.util.module_from_spec(spec)
        module.__package__ = self.root_name
        # Registered so that dataclasses and typing resolve the module's names; a second load of
        # the same package replaces the entries with its own copies (same code, its own meter).
        sys.modules[full] = self.modules[name] = module
        try:
            self.meter.run(LOAD_STEP_BUDGET, lambda: False, loader.exec_module, module)
        except BaseException:  # not loaded: forget it, then let the error go on
            sys.modules.pop(full, None)
            self.modules.pop(name, None)
            raise
        setattr(self.root, name, module)
        return module

    def import_(
        self,
        name: str,
        globals_: object = None,
        locals_: object = None,
        fromlist: Sequence[str] = (),
        level: int = 0,
    ) -> types.ModuleType:
        """`__import__` for package code: the allowlist (as proxies) and the package itself."""
        if level == 1:
            if not name:
                for item in fromlist:
                    if f"{item}.py" in self.files:
                        self.module(item)
                return self.root
            if f"{name}.py" in self.files:
                return self.module(name)
            raise ImportError(f"no module .{name} in this package")
        if level or not allowed_module(name):
            raise ImportError(f"contracts may not import {name!r}")
        module = self._allowed(name)
        if fromlist:
            return module
        # `import a.b` binds `a`: a parent that holds the allowed child (and, if `a` is not
        # itself allowed, nothing else: `import dltmw.contract_sdk` gives no other of dltmw)
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            parent_name = ".".join(parts[:i])
            if allowed_module(parent_name):
                parent = self._allowed(parent_name)
            else:
                parent = self.proxies.setdefault(parent_name, types.ModuleType(parent_name))
            setattr(parent, parts[i], module)
            module = parent
        return module

    def _allowed(self, name: str) -> types.ModuleType:
        proxy = self.proxies.get(name)
        if proxy is None:
            proxy = self.proxies[name] = _proxy(importlib.import_module(name))
        return proxy


# One package is parsed, checked, instrumented and compiled at a time in a process. CPython 3.11
# keeps the recursion depth of its AST <-> object conversion in interpreter-wide state, not per
# thread, so two threads converting ASTs at once can fail with SystemError("AST constructor
# recursion depth mismatch"): seen in `make test` when an embedded network's peers loaded their
# built-in packages on two pool threads together (test_embedding). Loads are rare (start,
# install), so the lock costs nothing that matters.
AST_LOCK = threading.Lock()


def load_package(data: bytes) -> LoadedPackage:
    """Parse, check and load package bytes (PackageError / PackageRefused if refused); one at a
    time per process (AST_LOCK)."""
    with AST_LOCK:
        return _load_package(data)


def _load_package(data: bytes) -> LoadedPackage:
    package = read_package(data)
    findings = check_sources(package.files)
    if findings:
        raise PackageRefused(findings)
    namespace = _Namespace(package.package_id, package.files, Meter())
    module_name, _, entry_name = package.manifest.entry.partition(":")
    try:
        entry = vars(namespace.module(module_name)).get(entry_name)
        if package.manifest.kind == UTXO_KIND:
            return _utxo(package, entry, namespace.meter)
        return _channel(package, entry, namespace.meter)
    except PackageError:
        raise
    except (Exception, StepBudgetExceeded) as exc:  # its top-level code failed or ran away
        raise PackageError("load_failed", f"loading the package failed: {exc!r}") from None


def _channel(package: Package, cls: object, meter: Meter) -> LoadedPackage:
    """A channel contract: the entry is an SDK Contract class."""
    if not (isinstance(cls, type) and issubclass(cls, SdkContract)):
        raise PackageError("bad_entry", f"{package.manifest.entry} is not an SDK Contract")
    if cls.name not in ("", package.manifest.name):
        raise PackageError("bad_entry", f"{cls.__name__}.name {cls.name!r} is not the manifest's")
    functions = {n: spec.kind for n, spec in cls.functions().items()}  # annotation errors now
    contract = MeteredContract(cls(), meter, package.manifest.name)
    return LoadedPackage(package.package_id, package.manifest, contract, functions)


def _utxo(package: Package, fn: object, meter: Meter) -> LoadedPackage:
    """A UTXO contract: the entry is a plain function `verify(tx)` of the package itself."""
    if not (
        isinstance(fn, types.FunctionType)
        and fn.__module__.startswith(PREFIX + package.package_id)
        and fn.__code__.co_argcount == 1
    ):
        raise PackageError("bad_entry", f"{package.manifest.entry} is not a function verify(tx)")
    verify = MeteredVerify(fn, meter, package.manifest.name, package.package_id)
    return LoadedPackage(package.package_id, package.manifest, None, {"verify": "utxo"}, verify)
