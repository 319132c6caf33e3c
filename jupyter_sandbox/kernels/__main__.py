"""``python -m jupyter_sandbox.kernels``: the kernel proxy, or the kernelspec installer.

* ``python -m jupyter_sandbox.kernels -f CONNECTION_FILE --type TYPE``: run a sandbox kernel
  (what the kernelspecs' argv does).
* ``python -m jupyter_sandbox.kernels install [--user | --sys-prefix | --prefix P]
  [--types base,browser] [--url URL]``: install ``sandbox-<type>`` kernelspecs (default: the
  built-in types, into ``sys.prefix``).
* ``python -m jupyter_sandbox.kernels remove [--types ...]``: remove them.
"""

from __future__ import annotations

import argparse
import sys

from . import BUILTIN_TYPES, check_type, install, remove


def _types(value: str) -> list[str]:
    types = [t.strip() for t in value.split(",") if t.strip()]
    if not types:
        raise argparse.ArgumentTypeError("no types given")
    try:
        return [check_type(t) for t in types]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _manage(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jupyter_sandbox.kernels",
        description='Install or remove the "Python 3 (sandbox: <type>)" kernelspecs.',
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install sandbox-<type> kernelspecs")
    where = inst.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="into the user's Jupyter data dir")
    where.add_argument("--sys-prefix", action="store_true", help="into sys.prefix (the default)")
    where.add_argument("--prefix", help="into PREFIX/share/jupyter/kernels")
    inst.add_argument(
        "--types",
        type=_types,
        default=list(BUILTIN_TYPES),
        help=f"comma-separated sandbox types, custom ones too (default: {','.join(BUILTIN_TYPES)})",
    )
    inst.add_argument(
        "--url", help="the sandbox server's URL, set as JUPYTER_SANDBOX_URL in the kernelspec"
    )
    rm = sub.add_parser("remove", help="remove sandbox-<type> kernelspecs")
    rm.add_argument("--types", type=_types, default=list(BUILTIN_TYPES))
    args = parser.parse_args(argv)
    if args.command == "install":
        prefix = None if args.user else (args.prefix or sys.prefix)
        for path in install(args.types, user=args.user, prefix=prefix, url=args.url):
            print(f"Installed kernelspec in {path}")
    else:
        for path in remove(args.types):
            print(f"Removed {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("install", "remove"):
        return _manage(argv)
    from .proxy import main as proxy_main

    return proxy_main(argv)


if __name__ == "__main__":
    sys.exit(main())
