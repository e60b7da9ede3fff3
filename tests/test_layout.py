"""The package's layout: imports run in one direction, Keras internals stay
in one module, nothing points outside the repository."""

import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).parent.parent / "keras_sing"

# A module may import only modules of a lower layer (and its own package's
# modules, for keras_sing.backend).
LAYERS = {
    "keras_sing.backend": 0,
    "keras_sing.backend.tensorflow": 0,
    "keras_sing.backend.torch": 0,
    "keras_sing.backend.jax": 0,
    "keras_sing.version": 0,
    "keras_sing.datasets": 0,
    "keras_sing.datasets.rde": 0,
    "keras_sing.axes": 1,
    "keras_sing.transforms": 1,
    "keras_sing._host": 2,
    "keras_sing.sing": 3,
    "keras_sing.callbacks": 4,
    "keras_sing": 5,
}

# Keras's private optimizer and layer internals: only keras_sing._host uses
# them.
KERAS_INTERNALS = re.compile(
    r"keras\.src|\._(momentums|velocities|velocity_hats|iterations|"
    r"learning_rate|get_variable_index|use_weight_decay|flatten_layers|"
    r"backend_update_step|apply_weight_decay|trainable_variables_indices|"
    r"var_key|variables)\b"
)


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def absolute_module(node, name, path):
    """The module an `ImportFrom` names, relative imports resolved against
    `name`'s package (`path` tells whether `name` is a package itself)."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_keras_sing_modules(path, name):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = absolute_module(node, name, path)
            if module.startswith("keras_sing"):
                for alias in node.names:
                    full = f"{module}.{alias.name}"
                    yield full if full in LAYERS else module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_sing"):
                    yield alias.name


def test_every_module_has_a_layer():
    assert {name for name, _ in modules()} == set(LAYERS)


@pytest.mark.parametrize("name, path", list(modules()), ids=lambda x: str(x))
def test_imports_run_in_one_direction(name, path):
    for imported in imported_keras_sing_modules(path, name):
        same_package = imported.startswith(name + ".") or (
            name.startswith("keras_sing.backend")
            and imported.startswith("keras_sing.backend")
        )
        assert same_package or LAYERS[imported] < LAYERS[name], (
            f"{name} (layer {LAYERS[name]}) imports {imported} "
            f"(layer {LAYERS[imported]})"
        )


@pytest.mark.parametrize("name, path", list(modules()), ids=lambda x: str(x))
def test_keras_internals_only_in_host_module(name, path):
    if name == "keras_sing._host":
        return
    found = [
        f"{path.name}:{i}: {line.strip()}"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if KERAS_INTERNALS.search(line) and not line.lstrip().startswith("#")
        and "self._variables" not in line
    ]
    assert not found, found


def test_nothing_refers_outside_the_repository():
    root = PACKAGE.parent
    files = list(PACKAGE.rglob("*.py")) + list((root / "docs").glob("*.md"))
    files += [root / "README.md"]
    for path in files:
        text = path.read_text()
        assert "../shared" not in text, path
        assert not re.search(r"\bSPEC(\.md| section)", text), path


@pytest.mark.parametrize(
    "source, name, file, expected",
    [
        ("from keras_sing import transforms", "keras_sing._host", "_host.py", "keras_sing"),
        ("from .sing import SING", "keras_sing._host", "_host.py", "keras_sing.sing"),
        ("from . import transforms", "keras_sing.callbacks", "callbacks.py", "keras_sing"),
        ("from .. import sing", "keras_sing.backend.torch", "torch.py", "keras_sing"),
        ("from .torch import max_abs", "keras_sing.backend", "__init__.py", "keras_sing.backend.torch"),
    ],
)
def test_relative_imports_are_resolved(source, name, file, expected):
    """A relative import cannot slip past the one-direction check."""
    node = ast.parse(source).body[0]
    assert absolute_module(node, name, pathlib.Path(file)) == expected
