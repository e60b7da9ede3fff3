"""Checks that the API reference covers every public name, on one template.

Run after `mkdocs build` (scripts/build_docs.sh does both), with a Keras
backend available:

    KERAS_BACKEND=jax python scripts/check_api_docs.py --site site

Fails (exit 1) when:

- a public name is missing from the built site's inventory
  (`site/objects.inv`, written by mkdocstrings): every name of
  `keras_sing.__all__`, every public function and class of the public
  submodules, and every public member that `SING` and
  `GradientNormMonitor` define;
- a public docstring breaks the template: a one-line summary; an `Args:`
  section naming exactly the parameters, each with a default saying
  "Defaults to"; `Returns:` when the code returns a value; `Raises:` when
  it raises; `Examples:` with `>>>` lines (run as doctests); `References:`
  for module-level functions and classes.

Names listed in PENDING are checked for presence only, with the reason
printed.
"""

import argparse
import ast
import importlib
import inspect
import re
import sys
import textwrap
import zlib

PUBLIC_MODULES = (
    "keras_sing.callbacks",
    "keras_sing.datasets",
    "keras_sing.datasets.rde",
    "keras_sing.transforms",
)
PUBLIC_CLASSES = (
    "keras_sing.SING",
    "keras_sing.callbacks.GradientNormMonitor",
)

# Present in the reference, but their docstrings are not (yet) on the
# template (none today; a name listed here is checked for presence only).
PENDING = {}

# Keras callback hooks that GradientNormMonitor overrides: Keras documents
# them, and the class docstring says what the callback does.
HOOKS = re.compile(r"^on_(train|test|predict|epoch)_")

SECTION = re.compile(r"^(\w[\w ]*):\s*$")


def inventory(site):
    """The names in mkdocstrings' Sphinx inventory, `site/objects.inv`."""
    with open(f"{site}/objects.inv", "rb") as f:
        data = f.read()
    header_end = 0
    for _ in range(4):  # four header lines, then zlib
        header_end = data.index(b"\n", header_end) + 1
    text = zlib.decompress(data[header_end:]).decode()
    return {line.split(" ", 1)[0] for line in text.splitlines() if line}


def public_names():
    """`{qualified name: object}` of everything public."""
    import keras_sing

    names = {"keras_sing": keras_sing}
    for name in keras_sing.__all__:
        names[f"keras_sing.{name}"] = getattr(keras_sing, name)
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names[module_name] = module
        members = getattr(module, "__all__", None)
        if members is None:
            members = [
                n
                for n, obj in vars(module).items()
                if not n.startswith("_")
                and (inspect.isfunction(obj) or inspect.isclass(obj))
                and getattr(obj, "__module__", None) == module_name
            ]
        for n in members:
            names[f"{module_name}.{n}"] = getattr(module, n)
    for class_name in PUBLIC_CLASSES:
        module_name, _, attr = class_name.rpartition(".")
        cls = getattr(importlib.import_module(module_name), attr)
        names[class_name] = cls
        for n, obj in vars(cls).items():
            if n.startswith("_") or HOOKS.match(n):
                continue
            if isinstance(obj, (property, classmethod, staticmethod)) or (
                inspect.isfunction(obj)
            ):
                names[f"{class_name}.{n}"] = obj
    return names


def sections(doc):
    """`{section title: body}` of a Google-style docstring."""
    found, title, body = {}, None, []
    for line in doc.splitlines():
        match = SECTION.match(line)
        if match and not line.startswith(" "):
            if title:
                found[title] = "\n".join(body)
            title, body = match.group(1), []
        elif title:
            body.append(line)
    if title:
        found[title] = "\n".join(body)
    return found


def documented_args(body):
    """The argument names an `Args:` section documents, with their text."""
    entries, name = {}, None
    for line in textwrap.dedent(body).splitlines():
        match = re.match(r"^(\*{0,2}\w+)(?: \(.*\))?:(.*)$", line)
        if match:
            name = match.group(1).lstrip("*")
            entries[name] = match.group(2)
        elif name and line.strip():
            entries[name] += " " + line.strip()
    return entries


def code_facts(function):
    """`(returns_value, raises)` from `function`'s own body (nested
    functions excluded)."""
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return False, False
    tree = ast.parse(source).body[0]
    returns = raises = False
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Return) and node.value is not None:
            if not (
                isinstance(node.value, ast.Constant) and node.value.value is None
            ):
                returns = True
        if isinstance(node, ast.Raise):
            raises = True
        stack.extend(ast.iter_child_nodes(node))
    return returns, raises


def template_problems(name, obj):
    """What `name`'s docstring lacks."""
    if inspect.ismodule(obj) or isinstance(obj, str):
        return []
    function = obj
    if isinstance(obj, property):
        function = obj.fget
    elif isinstance(obj, (classmethod, staticmethod)):
        function = obj.__func__
    doc = inspect.getdoc(function) or ""
    if not doc.strip():
        return ["no docstring"]
    problems = []
    if not doc.splitlines()[0].strip():
        problems.append("no one-line summary")
    found = sections(doc)
    examples = found.get("Examples", "")
    if ">>>" not in examples:
        problems.append("no `Examples:` section with `>>>` lines")
    member = name.count(".") > 1 and name.rsplit(".", 2)[-2][:1].isupper()
    if not member and "References" not in found:
        problems.append("no `References:` section")
    target = function
    if inspect.isclass(function):
        # a namedtuple's fields are its `__new__`'s arguments
        target = (
            function.__new__
            if function.__init__ is object.__init__
            else function.__init__
        )
    if isinstance(obj, property):
        params = []
    else:
        signature = inspect.signature(target)
        params = [
            p
            for p in signature.parameters.values()
            if p.name not in ("self", "cls") and not p.name.startswith("_")
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    args = documented_args(found.get("Args", ""))
    names = {p.name for p in params}
    for p in params:
        if p.name not in args:
            problems.append(f"argument `{p.name}` not in `Args:`")
        elif p.default is not p.empty and "Default" not in args[p.name]:
            problems.append(f"argument `{p.name}`: no 'Defaults to'")
    for extra in sorted(set(args) - names):
        problems.append(f"`Args:` names `{extra}`, not an argument")
    returns, raises = code_facts(target)
    if returns and not inspect.isclass(function) and "Returns" not in found:
        problems.append("returns a value, no `Returns:` section")
    if raises and "Raises" not in found:
        problems.append("raises, no `Raises:` section")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="site", help="the built site")
    args = parser.parse_args()
    documented = inventory(args.site)
    names = public_names()
    failures = []
    for name, obj in sorted(names.items()):
        if name not in documented:
            failures.append(f"{name}: missing from the API reference")
            continue
        if name in PENDING:
            continue
        failures.extend(f"{name}: {p}" for p in template_problems(name, obj))
    by_reason = {}
    for name, reason in sorted(PENDING.items()):
        by_reason.setdefault(reason, []).append(name.rsplit(".", 1)[-1])
    for reason, members in by_reason.items():
        print(f"not on the template yet ({reason}): {', '.join(members)}")
    if failures:
        print("\n".join(["API reference check FAILED:"] + failures))
        return 1
    print(
        f"API reference check passed: {len(names)} public names in the "
        f"reference, {len(names) - len(PENDING)} on the docstring template."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
