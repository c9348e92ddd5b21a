"""`shipyard pull`, `push`, `login`, `logout`: the registry commands, docker-style.

Argument definitions live here (not in `engine.cli`) and each command imports the
registry client only when it runs: httpx costs ~80 ms of start-up that builds which
never reach a registry should not pay.
"""

from __future__ import annotations

import argparse
import sys

from engine.errors import ImageNotFoundError, UsageError

COMMANDS = ("pull", "push", "login", "logout")
PROGRESS_MODES = ("auto", "tty", "plain", "json", "quiet")


def add_registry_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pull = sub.add_parser("pull", help="download an image from a registry into the local store")
    pull.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    pull.add_argument("--platform", default="", help="os/arch[/variant] to pick from a multi-platform image (default: the host's)")
    pull.add_argument("-q", "--quiet", action="store_true", help="print only the image name")
    pull.add_argument("--progress", choices=PROGRESS_MODES, default="auto")

    push = sub.add_parser("push", help="upload an image of the local store to its registry")
    push.add_argument("name", metavar="NAME[:TAG]")
    push.add_argument("-q", "--quiet", action="store_true", help="print only the pushed digest")
    push.add_argument("--progress", choices=PROGRESS_MODES, default="auto")

    login = sub.add_parser("login", help="check and store credentials for a registry (in docker's config.json)")
    login.add_argument("registry", nargs="?", default="docker.io", metavar="REGISTRY")
    login.add_argument("-u", "--username", default="")
    login.add_argument("-p", "--password", default=None, help="insecure: prefer --password-stdin")
    login.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    logout = sub.add_parser("logout", help="forget the stored credentials for a registry")
    logout.add_argument("registry", nargs="?", default="docker.io", metavar="REGISTRY")


def run_registry_command(args: argparse.Namespace) -> int:
    if args.command == "pull":
        return run_pull(args)
    if args.command == "push":
        return run_push(args)
    if args.command == "login":
        return run_login(args)
    return run_logout(args)


def _renderer(mode: str):  # type: ignore[no-untyped-def]
    from engine.commands.build import pick_renderer
    from engine.progress.events import EventBus

    bus = EventBus()
    renderer = pick_renderer(mode)
    if renderer is not None:
        bus.subscribe(renderer.handle)
    return bus, renderer


def run_pull(args: argparse.Namespace) -> int:
    from engine.commands.common import isolate_mounts, state_root
    from engine.reference import parse_reference

    reference = parse_reference(args.name)
    isolate_mounts()
    from engine.registry.client import RegistryClient
    from engine.registry.pull import pull_image
    from engine.solver.context import Engine

    engine = Engine.open(state_root(args))
    bus, renderer = _renderer("quiet" if args.quiet else args.progress)
    try:
        with RegistryClient.from_environment() as client:
            pulled = pull_image(engine, client, reference, platform=args.platform, events=bus)
    finally:
        if renderer is not None:
            renderer.close()
        engine.close()
    if not args.quiet:
        print(f"Digest: {pulled.root_digest}")
        status = "Downloaded newer image" if pulled.updated else "Image is up to date"
        print(f"Status: {status} for {reference.familiar()}")
    print(pulled.name)
    return 0


def run_push(args: argparse.Namespace) -> int:
    from engine.reference import parse_reference

    from engine.commands.common import state_root

    reference = parse_reference(args.name)
    if reference.digest:
        raise UsageError(f"push {args.name}: push a tag, not a digest")
    from engine.images import ImageStore
    from engine.registry.client import RegistryClient
    from engine.registry.push import push_stored
    from engine.solver.context import Engine

    engine = Engine.open(state_root(args))
    bus, renderer = _renderer("quiet" if args.quiet else args.progress)
    try:
        stored = ImageStore(engine).get(str(reference))
        if stored is None:
            raise ImageNotFoundError(f"an image does not exist locally with the tag: {reference.familiar()}")
        with RegistryClient.from_environment() as client:
            result = push_stored(engine, client, reference, stored.manifest_digest, stored.snapshot, events=bus)
    finally:
        if renderer is not None:
            renderer.close()
        engine.close()
    if args.quiet:
        print(result.digest)
    else:
        print(f"{reference.tag}: digest: {result.digest} size: {result.size}")
    return 0


def run_login(args: argparse.Namespace) -> int:
    from engine.registry.config import canonical_registry
    from engine.registry.credentials import Credential, DockerCredentials, StaticCredentials

    registry = canonical_registry(args.registry)
    if not registry:
        raise UsageError("login: name a registry (HOST[:PORT])")
    username = args.username
    password = args.password
    if password is not None and args.password_stdin:
        raise UsageError("login: --password and --password-stdin are mutually exclusive")
    if password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if args.password_stdin:
        if not username:
            raise UsageError("login: --password-stdin needs --username")
        password = sys.stdin.read().rstrip("\r\n")
    interactive = sys.stdin.isatty()
    if not username:
        if not interactive:
            raise UsageError("login: give --username (and --password-stdin) when not on a terminal")
        username = input("Username: ").strip()
    if password is None:
        if not interactive:
            raise UsageError("login: give --password-stdin when not on a terminal")
        import getpass

        password = getpass.getpass("Password: ")
    if not username or not password:
        raise UsageError("login: username and password must not be empty")
    credential = Credential(username, password)
    from engine.registry.client import RegistryClient
    from engine.registry.config import load_config

    with RegistryClient(load_config(), StaticCredentials(registry, credential), timeout=30.0) as client:
        client.check_login(registry)
    where = DockerCredentials().store(registry, credential)
    print(f"Login Succeeded (credentials stored in {where})")
    return 0


def run_logout(args: argparse.Namespace) -> int:
    from engine.registry.config import canonical_registry
    from engine.registry.credentials import DockerCredentials

    registry = canonical_registry(args.registry)
    if DockerCredentials().erase(registry):
        print(f"Removing login credentials for {registry}")
    else:
        print(f"Not logged in to {registry}")
    return 0
