"""Install what the GPU suite needs from local wheels, with no registry.

    python benchmarks/gpu_install.py --wheels .gpu-wheels --target /tmp/site

The GPU machine has Python 3.12 with JAX and PyTorch for CUDA (and numpy,
absl-py, ml-dtypes, rich, h5py), but no Keras, KerasHub or pytest, and no
network. This installs, from the wheels in `--wheels` (see
benchmarks/README.md for how that folder is filled), only the packages whose
module cannot be imported, into `--target` with `--no-deps` (pip's
`--target` would otherwise reinstall numpy and the rest), and prints the
folder to put on PYTHONPATH. Without pip it unpacks the wheels itself.
Standard library only: it runs before Keras is importable.
"""

import argparse
import importlib.util
import pathlib
import platform
import re
import subprocess
import sys
import zipfile

# (module to import, requirement); in install order. keras-hub is installed
# --no-deps as its tensorflow-text requirement cannot be met without TF, and
# is not needed on JAX or torch.
NEEDED = [
    ("typing_extensions", "typing_extensions"), ("packaging", "packaging"), ("namex", "namex"),
    ("optree", "optree"), ("h5py", "h5py"), ("pygments", "pygments"), ("mdurl", "mdurl"),
    ("markdown_it", "markdown-it-py"), ("rich", "rich"), ("keras", "keras==3.15.1"),
    ("regex", "regex"), ("tokenizers", "tokenizers"), ("keras_hub", "keras-hub==0.32.0"),
    ("iniconfig", "iniconfig"), ("pluggy", "pluggy"), ("pytest", "pytest"),
]


def missing():
    return [req for module, req in NEEDED if importlib.util.find_spec(module) is None]


def _norm(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def unpack(wheels, target, requirements):
    """No pip: unzip each wheel (pure Python or this platform's) into target."""
    glibc = tuple(int(x) for x in (platform.libc_ver()[1] or "0.0").split(".")[:2])
    for req in requirements:
        name, _, version = req.partition("==")
        candidates = sorted(w for w in wheels.glob("*.whl") if _norm(w.name.split("-")[0]) == _norm(name)
                            and (not version or w.name.split("-")[1] == version))
        # manylinux_2_28 wheels need glibc >= 2.27/2.28; older ones run anywhere.
        usable = [w for w in candidates if glibc >= (2, 28) or "manylinux_2_2" not in w.name] or candidates
        if not usable:
            sys.exit(f"gpu_install: no wheel for {req} in {wheels}")
        print(f"gpu_install: unpacking {usable[-1].name}", flush=True)
        with zipfile.ZipFile(usable[-1]) as z:
            z.extractall(target)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", default=".gpu-wheels")
    parser.add_argument("--target", required=True)
    args = parser.parse_args(argv)
    wheels, target = pathlib.Path(args.wheels), pathlib.Path(args.target)
    todo = missing()
    if not todo:
        print("gpu_install: everything imports already", flush=True)
        return 0
    if not wheels.is_dir():
        sys.exit(f"gpu_install: {', '.join(todo)} missing and no wheel folder {wheels} (see benchmarks/README.md)")
    target.mkdir(parents=True, exist_ok=True)
    print(f"gpu_install: installing {' '.join(todo)} from {wheels} into {target}", flush=True)
    has_pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0
    if has_pip:
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--no-deps",
               "--disable-pip-version-check", "--target", str(target), *todo]
        rc = subprocess.run(cmd).returncode
        if rc != 0:
            sys.exit(f"gpu_install: pip failed ({rc}): {' '.join(cmd)}")
    else:
        unpack(wheels, target, todo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
