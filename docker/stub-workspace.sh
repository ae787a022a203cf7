#!/bin/sh
# Gives every workspace member empty stub sources, so that `cargo build` in docker/Dockerfile's
# dependency layer compiles only the third-party crates (and the build scripts, which need only
# their build.rs and proto/). Needs the root Cargo.toml and Cargo.lock and each member's
# Cargo.toml; never overwrites a file that exists.
#
# Targets stubbed per member: the files of its declared [lib], [[bin]], [[bench]], [[test]] and
# [[example]] targets (Cargo 1.95 skips a declared bench whose file is missing and fails only
# when a missing target is built, but a stub costs nothing and no Cargo version has to guess),
# and src/lib.rs unless the member declares [[bin]] without [lib] (a binary-only package, like
# services/spreadagg). scripts/image-test checks that the stubbed
# workspace has the real one's lib and bin targets and resolves with --locked.
#
# Usage: docker/stub-workspace.sh [WORKSPACE_ROOT]
set -eu
cd "${1:-.}"

members=$(sed -n '/^members *= *\[/,/\]/p' Cargo.toml | grep -o '"[^"]*"' | tr -d '"')
[ -n "$members" ] || { echo "stub-workspace: no members in Cargo.toml" >&2; exit 1; }

for m in $members; do
  if [ ! -f "$m/Cargo.toml" ]; then
    echo "stub-workspace: $m/Cargo.toml is missing; docker/Dockerfile must COPY every member's manifest" >&2
    exit 1
  fi
  # One line per target file: "<kind> <path relative to the member>".
  awk '
    function flush() {
      if (kind == "") return
      if (path == "") {
        if (kind == "lib") path = "src/lib.rs"
        else if (kind == "bin") path = "src/bin/" name ".rs"
        else if (kind == "bench") path = "benches/" name ".rs"
        else if (kind == "test") path = "tests/" name ".rs"
        else if (kind == "example") path = "examples/" name ".rs"
      }
      print kind, path
      if (kind == "lib") lib = 1
      if (kind == "bin") bin = 1
      kind = ""; name = ""; path = ""
    }
    /^\[/ {
      flush()
      if ($0 ~ /^\[lib\]/) kind = "lib"
      else if ($0 ~ /^\[\[bin\]\]/) kind = "bin"
      else if ($0 ~ /^\[\[bench\]\]/) kind = "bench"
      else if ($0 ~ /^\[\[test\]\]/) kind = "test"
      else if ($0 ~ /^\[\[example\]\]/) kind = "example"
      next
    }
    kind != "" && /^name *=/ { v = $0; sub(/^name *= *"/, "", v); sub(/".*/, "", v); name = v }
    kind != "" && /^path *=/ { v = $0; sub(/^path *= *"/, "", v); sub(/".*/, "", v); path = v }
    END {
      flush()
      if (!lib && !bin) print "lib", "src/lib.rs"
    }
  ' "$m/Cargo.toml" | while read -r kind path; do
    f="$m/$path"
    [ -e "$f" ] && continue
    mkdir -p "$(dirname "$f")"
    if [ "$kind" = lib ]; then
      echo '//! Stub: the dependency layer of docker/Dockerfile.' > "$f"
    else
      echo 'fn main() {}' > "$f"
    fi
  done
done
