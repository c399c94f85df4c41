"""Pack pit's dependencies for an offline GPU node whose image already holds PyTorch.

GPU nodes are often cut off from package indexes, and their images carry
torch, transformers and the CUDA stack but not Prefect, MLflow or pydantic.
This script runs where PyPI is reachable. It walks pit's runtime requirements
through the distributions installed here, and takes the same versions. It
leaves out what the node already has (`--have`: a file of `pip list
--format freeze` lines or bare names, read on the node) and downloads wheels
for the node's Python and platform. It unpacks them into one site folder and
compresses that into a single archive, a third of the size of the wheels.

    python benchmarks/offline_site.py --have node-packages.txt --out .gpu-site/site.tar.xz
    # on the node, from the repository root:
    mkdir -p /tmp/site && tar xJf .gpu-site/site.tar.xz -C /tmp/site
    export PYTHONPATH=/tmp/site:$PWD

Packages pit's code calls with version-specific APIs (`--carry`, default:
datasets) are packed even where the node has some version of them. torch, the
CUDA libraries and triton never are: they must match the node's driver.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as norm

ROOT = Path(__file__).resolve().parents[1]
NEVER = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")
# The tracking client and its SQLite store, without the MLflow server and UI.
SLIM = {"mlflow": "mlflow-skinny"}
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_28_x86_64", "manylinux_2_31_x86_64",
             "manylinux_2_34_x86_64", "manylinux_2_35_x86_64", "manylinux1_x86_64")


def runtime_roots(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """pit's own `dependencies`, not its extras: what `import pit` and its flows need."""
    import tomllib

    deps = [Requirement(d) for d in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    for r in deps:
        r.name = SLIM.get(norm(r.name), r.name)
    return deps


def closure(roots: list[Requirement], have: set[str], carry: set[str]) -> dict[str, str]:
    """name -> installed version of every distribution to pack.

    A distribution the node has is neither packed nor walked (its own needs are the
    node's business), unless `carry` names it. Extras asked for (`sqlalchemy[asyncio]`)
    are followed.
    """
    have, carry = {norm(h) for h in have}, {norm(c) for c in carry}
    out: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()

    def visit(req: Requirement) -> None:
        name = norm(req.name)
        key = (name, frozenset(req.extras))
        if key in seen or NEVER.match(name) or (name in have and name not in carry):
            return
        seen.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"{name} is not installed here; install pit first "
                             "(pip install -e .) so its versions can be read") from None
        out[name] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker and not any(sub.marker.evaluate({"extra": e})
                                      for e in ("", *req.extras)):
                continue
            visit(sub)

    for r in roots:
        visit(r)
    return out


def read_have(path: Path | None) -> set[str]:
    if path is None:
        return set()
    names = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(norm(re.split(r"[=<>@ ]", line, maxsplit=1)[0]))
    return names


def build(pins: dict[str, str], python: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp, "wheels"), Path(tmp, "site")
        spec = [f"{n}=={v}" for n, v in sorted(pins.items())]
        platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
        binary, source = [], []
        for s in spec:
            got = subprocess.run(
                [*pip, "download", "-q", "--no-deps", "--only-binary=:all:",
                 "--python-version", python, "--implementation", "cp", *platform_args,
                 "-d", str(wheels), s], capture_output=True, text=True)
            (binary if got.returncode == 0 else source).append(s)
        if source:  # pure-Python projects published as sdists only (rouge-score)
            subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), *source],
                           check=True)
        subprocess.run([*pip, "install", "-q", "--no-deps", "--no-compile",
                        "--only-binary=:all:", "--python-version", python,
                        "--implementation", "cp", *platform_args, "--target", str(site),
                        *map(str, sorted(wheels.glob("*.whl")))], check=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        subprocess.run(["tar", "-I", "xz -T0 -6", "-cf", str(partial), "-C", str(site), "."],
                       check=True)
        partial.replace(out)
        print(f"{len(spec)} distributions ({len(source)} built from source) -> {out} "
              f"({out.stat().st_size / 2**20:.1f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--have", type=Path, help="Packages the node already has, one per line.")
    ap.add_argument("--carry", default="datasets",
                    help="Comma-separated names packed even where the node has them.")
    ap.add_argument("--python", default="3.12", help="The node's Python version.")
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu-site" / "site.tar.xz")
    ap.add_argument("--list", action="store_true", help="Print what would be packed; stop.")
    args = ap.parse_args()
    carry = {c for c in args.carry.split(",") if c}
    pins = closure(runtime_roots(), read_have(args.have), carry)
    if args.list:
        print("\n".join(f"{n}=={v}" for n, v in sorted(pins.items())))
        return
    build(pins, args.python, args.out)


if __name__ == "__main__":
    main()
