"""Generate the Python code for proto/ into the client package.

One command makes every generated file: messages (`*_pb2.py`), gRPC stubs
(`*_pb2_grpc.py`) and type stubs for both (`*.pyi`, from mypy-protobuf).
`--check` regenerates into a temporary folder and fails on any difference,
so CI catches generated code that drifted from proto/ or was edited by hand.

    python tools/generate_protos.py          # write clients/python/src/
    python tools/generate_protos.py --check  # exit 1 on drift
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_ROOT = ROOT / "clients" / "python" / "src"
PACKAGE = Path("aivcs") / "ledger" / "v1"
INIT_TEXT = '"""Generated from proto/aivcs/ledger/v1 by tools/generate_protos.py. Do not edit."""\n'


def generate(out_root: Path) -> None:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugins."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    bin_dir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=ROOT)
    (out_root / PACKAGE / "__init__.py").write_text(INIT_TEXT)


def generated_files(root: Path) -> set[str]:
    return {p.name for p in (root / PACKAGE).iterdir() if p.is_file()}


def check() -> int:
    """Regenerate into a temporary folder and compare file by file."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        (fresh / PACKAGE).mkdir(parents=True)
        generate(fresh)
        want, have = generated_files(fresh), generated_files(OUT_ROOT)
        drift = sorted(want ^ have)
        drift += [
            name
            for name in sorted(want & have)
            if not filecmp.cmp(fresh / PACKAGE / name, OUT_ROOT / PACKAGE / name, shallow=False)
        ]
    if drift:
        print("generated code is out of date with proto/: " + ", ".join(drift), file=sys.stderr)
        print("run: python tools/generate_protos.py", file=sys.stderr)
        return 1
    print("generated code matches proto/")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed code differs")
    if parser.parse_args().check:
        return check()
    target = OUT_ROOT / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    generate(OUT_ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
