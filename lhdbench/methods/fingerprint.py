"""A search method's code as a short fingerprint, part of its trials' identity.

An edited method must never be served from the results of its old code, so a search's trial id hashes
the code that decides what the method does: every class in its method resolution order (a plugin's
class, the baseline it builds on, `SearchMethod` itself), and the module-level functions, classes and
constants those classes use by name, followed through the modules of the method's own package
(`lhdbench.baselines` for a built-in method, the file or package of a plugin). lhdbench's core (the
loop, the supernet, the data) is covered by the version and commit every record keeps instead: its
changes are checked against the original code, not rerun.

What counts is the code, not its layout: comments, blank lines, docstrings and the spacing inside a
line do not change the fingerprint, so tidying a file reruns nothing. Editing one method of a module
that holds several reruns only the methods whose code (or the helpers they use) changed. The tokens are
compared as text, which reads the same on every Python version, so the same code on two machines gives
the same trial ids.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import io
import sys
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path

# Token kinds that carry no meaning for what the code does.
_SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
# Python 3.12 splits an f-string into parts; 3.11 has one STRING token. Joined back into one.
_FSTRING_START = getattr(tokenize, "FSTRING_START", None)
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)
CORE_PACKAGE = "lhdbench"
BASELINES_PACKAGE = "lhdbench.baselines"


@dataclass(frozen=True)
class MethodCode:
    """A method's fingerprint and what it covers (`module:qualname` of every part hashed)."""

    fingerprint: str
    parts: tuple[str, ...]


_CACHE: dict[type, MethodCode] = {}


def method_code(cls: type) -> MethodCode:
    """The fingerprint of `cls`'s code (cached per class: a class object's code cannot change)."""
    if cls not in _CACHE:
        _CACHE[cls] = _fingerprint(cls)
    return _CACHE[cls]


def _fingerprint(cls: type) -> MethodCode:
    owner = _package_of(cls.__module__)
    for klass in cls.__mro__:  # classes defined in functions cannot be found by name later
        if "<locals>" in klass.__qualname__:
            _LOCAL_CLASSES[f"{klass.__module__}:{klass.__qualname__}"] = klass
    seen: set[tuple[str, str]] = set()
    pieces: list[tuple[str, str]] = []
    queue = [(k.__module__, k.__qualname__) for k in cls.__mro__ if k is not object]
    while queue:
        module_name, qualname = queue.pop(0)
        if (module_name, qualname) in seen:
            continue
        seen.add((module_name, qualname))
        found = _definition(module_name, qualname)
        if found is None:
            pieces.append((f"{module_name}:{qualname}", _fallback_text(module_name, qualname)))
            continue
        module, node, text = found
        pieces.append((f"{module_name}:{qualname}", text))
        if "<locals>" in qualname:
            continue  # defined inside a function: its code is its own text
        for name in sorted(_names_used(node)):
            target = _resolve(module, name, owner)
            if target is not None:
                queue.append(target)
    digest = hashlib.sha256()
    for label, text in sorted(pieces):
        digest.update(f"{label}\n{text}\n\0".encode())
    return MethodCode(digest.hexdigest()[:16], tuple(sorted(label for label, _ in pieces)))


def _package_of(module_name: str) -> str:
    """The package whose modules count as the method's own code."""
    if module_name == BASELINES_PACKAGE or module_name.startswith(BASELINES_PACKAGE + "."):
        return BASELINES_PACKAGE
    return module_name.split(".")[0]


def _is_own(module_name: str, owner: str) -> bool:
    """A module whose definitions are followed: the method's package, never lhdbench's core (but the
    classes of the MRO, `SearchMethod` included, are hashed whatever their module)."""
    in_owner = module_name == owner or module_name.startswith(owner + ".")
    in_core = (module_name == CORE_PACKAGE or module_name.startswith(CORE_PACKAGE + ".")) and not (
        module_name == BASELINES_PACKAGE or module_name.startswith(BASELINES_PACKAGE + "."))
    return in_owner and (not in_core or owner == CORE_PACKAGE)


def _resolve(module, name: str, owner: str) -> tuple[str, str] | None:
    """(module, qualname) of the top-level definition `name` refers to in `module`, if it is the
    method's own code: defined in this module, or imported from another module of its package."""
    tree = _module_tree(module)
    if tree is not None and name in _top_level(tree):
        return module.__name__, name
    value = vars(module).get(name)
    where = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if (isinstance(where, str) and isinstance(qualname, str) and where != module.__name__
            and (inspect.isclass(value) or inspect.isfunction(value)) and _is_own(where, owner)
            and _is_own(module.__name__, owner)):
        return where, qualname
    return None


def _definition(module_name: str, qualname: str):
    """(module, node, normalized text) of a definition, or None when its source cannot be had."""
    module = sys.modules.get(module_name)
    tree = _module_tree(module) if module is not None else None
    if tree is None:
        return None
    top = _top_level(tree)
    path = [part for part in qualname.split(".") if part != "<locals>"]
    node = top.get(path[0])
    for part in path[1:]:
        matches = [child for child in ast.walk(node) if child is not node
                   and isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                   and child.name == part] if node is not None else []
        node = _pick(matches, _lookup_class(module_name, qualname)) if matches else None
    if node is None:
        return None
    return module, node, _normalized(_segment(_source(module), node))


def _pick(matches: list[ast.AST], cls: type | None) -> ast.AST:
    """Of several definitions with one name (a class defined in two branches of a function), the one
    whose lines hold the class's own functions."""
    lines = {getattr(v, "__code__", None).co_firstlineno for v in vars(cls).values()
             if getattr(v, "__code__", None) is not None} if cls is not None else set()
    for node in matches:
        if any(node.lineno <= line <= node.end_lineno for line in lines):
            return node
    return matches[0]


_LOCAL_CLASSES: dict[str, type] = {}


def _lookup_class(module_name: str, qualname: str) -> type | None:
    return _LOCAL_CLASSES.get(f"{module_name}:{qualname}")


def _names_used(node: ast.AST) -> set[str]:
    names = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            names.add(child.id)
        elif isinstance(child, ast.Attribute):
            root = child
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name):
                names.add(root.id)
    return names


# Per module object (kept alive here, so its id is not reused): the source as first read, which is the
# code that was imported unless the file changed since; a reloaded module is a new object.
_TREES: dict[int, tuple[object, str, ast.Module | None]] = {}


def _source(module) -> str:
    return _TREES[id(module)][1]


def _module_tree(module) -> ast.Module | None:
    if id(module) not in _TREES:
        try:
            source = inspect.getsource(module)
            _TREES[id(module)] = (module, source, ast.parse(source))
        except (OSError, TypeError, SyntaxError):
            _TREES[id(module)] = (module, "", None)
    return _TREES[id(module)][2]


def _top_level(tree: ast.Module) -> dict[str, ast.AST]:
    """Module-level definitions by name: functions, classes and assigned constants."""
    out: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        out.setdefault(leaf.id, node)
    return out


def _segment(source: str, node: ast.AST) -> str:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    lines = source.splitlines()[first - 1: node.end_lineno]
    return textwrap.dedent("\n".join(lines)) + "\n"


def _normalized(text: str) -> str:
    """The code's tokens, one per line, without comments, blank lines and docstrings."""
    try:
        docstrings = _docstring_starts(ast.parse(text))
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (SyntaxError, tokenize.TokenError):
        return text
    out: list[str] = []
    depth, start, after_docstring = 0, None, False
    lines = text.splitlines(keepends=True)
    for token in tokens:
        if _FSTRING_START is not None and token.type == _FSTRING_START:
            depth += 1
            if depth == 1:
                start = token.start
            continue
        if depth:
            if token.type == _FSTRING_END:
                depth -= 1
                if depth == 0:
                    out.append(_slice(lines, start, token.end))
            continue
        if token.type in _SKIPPED:
            continue
        if token.type == tokenize.STRING and token.start in docstrings:
            after_docstring = True  # its statement's NEWLINE goes with it
            continue
        if after_docstring and token.type == tokenize.NEWLINE:
            after_docstring = False
            continue
        after_docstring = False
        if token.type == tokenize.INDENT:
            out.append("<indent>")
        elif token.type == tokenize.DEDENT:
            out.append("<dedent>")
        elif token.type == tokenize.NEWLINE:
            out.append("<newline>")
        else:
            out.append(token.string)
    return "\n".join(out)


def _docstring_starts(tree: ast.AST) -> set[tuple[int, int]]:
    starts = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                starts.add((body[0].value.lineno, body[0].value.col_offset))
    return starts


def _slice(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    (row0, col0), (row1, col1) = start, end
    if row0 == row1:
        return lines[row0 - 1][col0:col1]
    return lines[row0 - 1][col0:] + "".join(lines[row0: row1 - 1]) + lines[row1 - 1][:col1]


def _fallback_text(module_name: str, qualname: str) -> str:
    """A class without readable source (built in a notebook cell, say): its functions' bytecode, so an
    edit still changes the fingerprint on this Python version."""
    cls = _lookup(module_name, qualname)
    if cls is None:
        return f"unavailable {module_name}:{qualname}"
    parts = []
    for name, value in sorted(vars(cls).items()):
        code = getattr(getattr(value, "__func__", value), "__code__", None)
        parts.append(f"{name}={_code_text(code) if code is not None else repr(value)}")
    return "\n".join(parts)


def _code_text(code) -> str:
    consts = [_code_text(c) if inspect.iscode(c) else repr(c) for c in code.co_consts]
    return f"{code.co_code.hex()}|{consts}|{code.co_names}"


def _lookup(module_name: str, qualname: str):
    value = sys.modules.get(module_name)
    for part in qualname.split("."):
        value = getattr(value, part, None)
    return value


def source_file(cls: type) -> Path | None:
    """The file a method class was defined in, where known."""
    try:
        return Path(inspect.getsourcefile(cls) or "")
    except TypeError:
        return None
