#!/usr/bin/env python3
"""A CycloneDX SBOM of the crates linked into the operator binary for one target triple.

    .venv/bin/python release/sbom.py --target x86_64-unknown-linux-gnu > sbom.cdx.json

Read from Cargo.lock by cargo itself: `cargo tree --locked -p secure-qdrant-operator -e
normal,no-proc-macro --target TRIPLE` lists what the binary links for the triple: normal
dependency edges only (no build or dev dependency) whose `cfg(...)` holds for the triple, with
cargo's real feature resolution, and no proc-macro crate (it runs inside the compiler; its own
dependencies appear only if the binary reaches them otherwise). Licences and checksums come from
`cargo metadata` and Cargo.lock.

Why not `cargo metadata --filter-platform` (or cargo-cyclonedx, which reads it): its resolve unifies
features over the whole workspace and the dev-dependencies, so it lists about 35 crates the
binary does not contain (kube-cel, cel, chrono, url, idna, uuid...: features that only the tests
turn on). tests/sbom.rs checks the result against the dependency list cargo-auditable embeds in
the binary, which is what was really linked. The document is built, serialised and validated by
cyclonedx-python-lib.

Deterministic: the serial number is derived from Cargo.lock and the triple, the timestamp from
SOURCE_DATE_EPOCH (0 when unset), so the same lock file gives the same SBOM.
"""

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
from datetime import datetime, timezone
from pathlib import Path

from cyclonedx.factory.license import LicenseFactory
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

ROOT = Path(__file__).resolve().parent.parent
BIN_PACKAGE = "secure-qdrant-operator"


def all_packages() -> dict:
    out = subprocess.run(
        ["cargo", "metadata", "--locked", "--format-version", "1"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return {(p["name"], p["version"]): p for p in json.loads(out.stdout)["packages"]}


def tree(target: str) -> list[tuple[int, str, str]]:
    """`cargo tree` of the operator's normal, non-proc-macro dependencies on the triple: (depth,
    name, version) per line, in order."""
    out = subprocess.run(
        ["cargo", "tree", "--locked", "-p", BIN_PACKAGE, "-e", "normal,no-proc-macro",
         "--target", target, "--prefix", "depth", "--format", "{p}"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    lines = []
    for line in out.stdout.splitlines():
        m = re.match(r"^(\d+)(\S+) v(\S+)", line)
        if not m:
            raise SystemExit(f"unexpected cargo tree line: {line!r}")
        lines.append((int(m[1]), m[2], m[3]))
    return lines


def linked_packages(target: str) -> tuple[dict, list, dict]:
    """The root package, the packages linked into its binary (root excluded) and the edges, as
    (name, version) keys."""
    packages = all_packages()
    lines = tree(target)
    root = lines[0][1:]
    assert lines[0][0] == 0 and root[0] == BIN_PACKAGE, lines[0]
    edges: dict = {}
    stack: list = []
    for depth, name, version in lines:
        key = (name, version)
        del stack[depth:]
        if stack:
            children = edges.setdefault(stack[-1], [])
            if key not in children:
                children.append(key)
        edges.setdefault(key, [])
        stack.append(key)
    linked = sorted((packages[k] for k in edges if k != root),
                    key=lambda p: (p["name"], p["version"]))
    return packages[root], linked, edges


def purl(pkg: dict) -> PackageURL:
    return PackageURL(type="cargo", name=pkg["name"], version=pkg["version"])


def bom(target: str) -> Bom:
    lock_text = (ROOT / "Cargo.lock").read_text()
    checksums = {(p["name"], p["version"]): p.get("checksum")
                 for p in tomllib.loads(lock_text).get("package", [])}
    root, linked, edges = linked_packages(target)
    licenses = LicenseFactory()

    def component(pkg: dict, kind: ComponentType) -> Component:
        c = Component(
            type=kind, name=pkg["name"], version=pkg["version"], purl=purl(pkg),
            bom_ref=str(purl(pkg)),
            licenses=[licenses.make_from_string(pkg["license"])] if pkg.get("license") else [],
        )
        checksum = checksums.get((pkg["name"], pkg["version"]))
        if checksum:
            c.hashes.add(HashType(alg=HashAlgorithm.SHA_256, content=checksum))
        return c

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    doc = Bom(serial_number=uuid.UUID(bytes=hashlib.sha256(
        (lock_text + "\0" + target).encode()).digest()[:16], version=5))
    doc.metadata.timestamp = datetime.fromtimestamp(epoch, tz=timezone.utc)
    doc.metadata.component = component(root, ComponentType.APPLICATION)
    doc.metadata.properties.add(Property(name="cdx:rust:target", value=target))
    by_id = {(root["name"], root["version"]): doc.metadata.component}
    for pkg in linked:
        c = component(pkg, ComponentType.LIBRARY)
        doc.components.add(c)
        by_id[(pkg["name"], pkg["version"])] = c
    for parent, children in edges.items():
        doc.register_dependency(by_id[parent], [by_id[c] for c in children])
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="target triple, e.g. aarch64-unknown-linux-gnu")
    args = parser.parse_args()
    sys.stdout.write(JsonV1Dot6(bom(args.target)).output_as_string(indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
