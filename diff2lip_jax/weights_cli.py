"""diff2lip-weights: list, fetch and locate the external weight files.

Usage: diff2lip-weights list
       diff2lip-weights fetch NAME [NAME ...]     (or `fetch all`)
       diff2lip-weights path NAME

Files live in $DIFF2LIP_CACHE (default ~/.cache/diff2lip_jax) as <name>/<file>;
$DIFF2LIP_WEIGHTS_MIRROR=URL fetches direct files from URL/<file> instead.
`fetch` downloads what is missing (atomic, checksum verified) and checks what
is there; `path` prints where a file is (or goes), for scripts:
`--s3fd_weights "$(diff2lip-weights path s3fd)"`.
"""

from __future__ import annotations

from diff2lip_jax import weights

PROG = "diff2lip-weights"
COMMANDS = ("list", "fetch", "path")


def _list() -> None:
    rows = [("name", "file", "size", "checksum", "cached", "licence", "used by")]
    for w in weights.REGISTRY.values():
        check = "sha256" if w.sha256 else f"sha256 {w.sha256_prefix}..." if w.sha256_prefix else "-"
        how = "manual" if w.manual else "url"
        rows.append(
            (
                w.name,
                w.filename,
                w.size,
                check,
                "yes" if weights.path(w).is_file() else f"no ({how})",
                w.licence,
                w.used_by,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(n) for c, n in zip(r, widths)) + "  " + r[-1])
    print(f"cache: {weights.cache_dir()} (${weights.CACHE_ENV}); sources: `{PROG} fetch NAME` downloads")
    for w in weights.REGISTRY.values():
        print(f"  {w.name}: {w.url}")


def _main(argv: list[str]) -> None:
    args = argv[1:]
    if not args or args[0] not in COMMANDS:
        raise ValueError(f"choose a command: {' | '.join(COMMANDS)} (e.g. `{PROG} list`)")
    command, names = args[0], args[1:]
    if command == "list":
        if names:
            raise ValueError(f"`list` takes no names (got {' '.join(names)})")
        _list()
        return
    if not names:
        raise ValueError(f"`{command}` needs a weight name; known: {', '.join(weights.REGISTRY)}")
    if command == "fetch" and names == ["all"]:
        names = [n for n, w in weights.REGISTRY.items() if not w.manual]
    entries = [weights.lookup(n) for n in names]  # every name checked before any download
    if command == "path":
        if len(entries) != 1:
            raise ValueError("`path` takes one name")
        print(weights.path(entries[0]))
        return
    for w in entries:
        cached = weights.path(w).is_file()
        file = weights.fetch(w)
        checked = weights.verify(w, file)
        print(f"{w.name}: {file} ({'already cached' if cached else 'downloaded'}; checksum: {checked})")


def run(argv: list[str] | None = None) -> None:
    """Console script `diff2lip-weights`."""
    from diff2lip_jax import cli

    cli.run_app(PROG, _main, argv=argv, doc=__doc__)


if __name__ == "__main__":
    run()
