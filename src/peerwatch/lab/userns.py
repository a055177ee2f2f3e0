"""``peerwatch lab`` without root: the part that runs inside a fresh user namespace.

``peerwatch lab`` re-runs itself here through ``unshare --user --map-root-user
--net --mount`` when it is not root. Inside, this process is root of its own
user namespace and may create network namespaces owned by it; a private tmpfs
over /run/netns gives ``ip netns`` a place for their names. Everything the lab
builds lives inside that user namespace and vanishes with it, whatever
happens to this process.
"""

from __future__ import annotations

import sys

from peerwatch.lab.netns import LabError, prepare_netns_dir_in_userns


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        prepare_netns_dir_in_userns()
    except LabError as exc:
        print(f"peerwatch lab: cannot prepare the user namespace: {exc}", file=sys.stderr)
        return 2
    from peerwatch.cli import main as cli_main

    return cli_main(["lab", "--inside-userns", *args])


if __name__ == "__main__":
    raise SystemExit(main())
