"""A network as code: a user's nn.Module class, named `file.py:Class` or `package.module:Class`.

The run keeps the class's whole source file (its text, SHA-256, the class name), so it is rebuilt
from that copy, never from the user's file, which may have moved or changed. Rebuilding runs the
copy's code, so it happens only when the user says so: in the process that was given the class
(it named the code itself), or with --trust-code / FMNIST_TRUST_CODE=1. Opening a run folder,
listing it or reading its config never executes it.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import sys
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fmnist.errors import FmnistError, UsageError

TRUST_ENV = "FMNIST_TRUST_CODE"
TRUST_HINT = f"--trust-code (or {TRUST_ENV}=1)"
TRUSTED: set[str] = set()  # digests of the code this process's user named on its command line
LIVE: dict[str, Any] = {}  # digest -> a class (or builder) given to this process in Python itself
NOTEBOOK_IMPORTS = "import torch\nfrom torch import nn\nimport torch.nn.functional as F\n"


class UntrustedCode(UsageError):
    """A run's network is code and the user has not said to run it."""


def read_code(spec: str, args: dict[str, Any]) -> dict[str, Any]:
    """The record of `spec` (`path.py:Class` or `module:Class`), its interface checked with `args`:
    a [N, 1, 28, 28] float batch in, [N, 10] out. The user named it, so this process trusts it."""
    target, _, name = spec.rpartition(":")
    if not target or not name.isidentifier():
        raise UsageError(f"{spec!r}: name a class as FILE.py:Class or package.module:Class")
    if target.endswith(".py") or "/" in target or os.sep in target:
        path = Path(target)
        try:
            source = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"network code not found: {target}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read network code {target}: {e}") from None
    else:
        try:
            module = importlib.import_module(target)
            source = inspect.getsource(module)
        except Exception as e:  # the user's module: any error of its import is theirs
            raise UsageError(f"cannot import {target}: {type(e).__name__}: {e}") from None
    record = {
        "kind": "code",
        "name": name,
        "class": name,
        "file": target,
        "sha256": hashlib.sha256(source.encode("utf-8")).hexdigest(),
        "source": source,
    }
    TRUSTED.add(record["sha256"])
    with torch.random.fork_rng(devices=[]):  # the check's initialisation leaves the seed's draws alone
        check_interface(build_code(record, args), spec)
    return record


def trusted(record: dict[str, Any]) -> bool:
    return os.environ.get(TRUST_ENV) == "1" or record.get("sha256") in TRUSTED


def describe_code(record: dict[str, Any]) -> str:
    return f"{record.get('class')} from {record.get('file')}, sha256 {str(record.get('sha256'))[:12]}…"


def record_class(cls: Any) -> dict[str, Any]:
    """The record of a class or builder function given in Python (fmnist.train(MyNet)): its
    module's source where Python has the file, else (a notebook cell) the class's own definition
    with the cell's imports, else none (then only this process, or one given the class again,
    can build it). This process builds it from `cls` itself."""
    name = getattr(cls, "__name__", None)
    if not callable(cls) or not name or not name.isidentifier():
        raise UsageError(f"a network is a name, a file, or an nn.Module class or builder, got {cls!r}")
    source, where = class_source(cls)
    digest = hashlib.sha256((source or f"{cls.__module__}.{cls.__qualname__}").encode("utf-8")).hexdigest()
    LIVE[digest] = cls
    return {"kind": "code", "name": name, "class": name, "file": where, "sha256": digest, "source": source}


def class_source(cls: Any) -> tuple[str, str]:
    """(source, where it came from) of `cls`; ("", where) when Python cannot give it."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if path and cls.__module__ != "__main__":
        try:
            return inspect.getsource(module), path
        except (OSError, TypeError):
            return "", path
    return cell_source(cls), "<notebook or __main__>"


def cell_source(cls: Any) -> str:
    """The definition of `cls` from the cell or script it was typed in, after that cell's imports
    and the usual torch ones (a notebook imports in an earlier cell)."""
    import ast
    import linecache

    functions = [v for v in vars(cls).values() if inspect.isfunction(v)] if isinstance(cls, type) else [cls]
    for function in functions:
        text = "".join(linecache.getlines(function.__code__.co_filename))
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        nodes = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        nodes += [n for n in tree.body if getattr(n, "name", None) == cls.__name__]
        if nodes[-1:] and getattr(nodes[-1], "name", None) == cls.__name__:
            return NOTEBOOK_IMPORTS + "\n".join(ast.get_source_segment(text, n) or "" for n in nodes) + "\n"
    return ""


def build_code(record: dict[str, Any], args: dict[str, Any]) -> nn.Module:
    """The class of `record` built with `args`, from the record's own copy of its source (or from
    the class itself, where it was given to this process in Python)."""
    if record.get("sha256") in LIVE:
        return _instance(LIVE[record["sha256"]], record, args)
    if not record.get("source"):
        raise UsageError(
            f"its network is {record.get('class')}, a class whose source Python could not give when it "
            f"trained; give the class again: fmnist.open(path, network={record.get('class')})"
        )
    if not trusted(record):
        raise UntrustedCode(f"its network is code ({describe_code(record)}); to run it, give {TRUST_HINT}")
    source = record.get("source", "")
    if hashlib.sha256(source.encode("utf-8")).hexdigest() != record.get("sha256"):
        raise FmnistError(f"its network's source does not match its SHA-256 ({describe_code(record)})")
    module = _module(record)
    cls = getattr(module, record["class"], None)
    if cls is None:
        found = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module)]
        raise UsageError(f"{record['file']}: no class {record['class']!r}; it defines: {', '.join(found) or 'none'}")
    return _instance(cls, record, args)


def _instance(cls: Any, record: dict[str, Any], args: dict[str, Any]) -> nn.Module:
    try:
        model = cls(**args)
    except Exception as e:  # the user's constructor
        raise UsageError(f"{record['class']}({_args(args)}) failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"{record['class']}({_args(args)}) is a {type(model).__name__}, not a torch nn.Module")
    return model


def _args(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def _module(record: dict[str, Any]) -> types.ModuleType:
    """The source executed once per process as a module of its own, named by its digest (so
    dataclasses and pickling inside it find it in sys.modules)."""
    name = f"fmnist_network_{record['sha256'][:16]}"
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__file__ = str(record["file"])
        sys.modules[name] = module
        try:
            exec(compile(record["source"], str(record["file"]), "exec"), module.__dict__)
        except Exception as e:  # the user's module
            del sys.modules[name]
            raise UsageError(f"{record['file']}: running it failed: {type(e).__name__}: {e}") from None
    return sys.modules[name]


def check_interface(model: nn.Module, spec: str) -> None:
    """A [2, 1, 28, 28] float batch in, a [2, 10] float tensor out, in eval mode."""
    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, 1, 28, 28))
    except Exception as e:  # the user's forward
        raise UsageError(
            f"{spec}: its forward fails on a [N, 1, 28, 28] batch: {type(e).__name__}: {str(e).splitlines()[0]}"
        ) from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, 10) or not out.is_floating_point():
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"{spec}: maps a [2, 1, 28, 28] batch to {got}; a network must give [N, 10] logits")
