"""The Dockerfile's dependency layer copies every workspace member's manifest (its stub step
refuses a workspace with one missing, so a new crate would break the image build), and nothing
that is not a member."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_workspace_member_manifest_is_copied_before_the_dependency_build():
    members = set(tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"])
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    copied = {m.group(1) for m in re.finditer(r"^COPY (services/[a-z-]+)/Cargo\.toml", dockerfile, re.M)}
    assert copied == members, f"missing: {members - copied}, not members: {copied - members}"
