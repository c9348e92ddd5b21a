"""The image-management subcommands' arguments and dispatch: images, tag, rmi, inspect,
history, save, load.

Kept out of `engine.cli` so that file stays a short list of commands; each handler
module is imported only when its command runs (start-up time is paid by every build).
"""

from __future__ import annotations

import argparse

COMMANDS = ("images", "tag", "rmi", "inspect", "history", "save", "load")


def add_image_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    images = sub.add_parser("images", help="list images in the local store")
    images.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]", help="only images matching this name (globs allowed)")
    images.add_argument("-a", "--all", action="store_true", help="accepted for docker compatibility (there are no intermediate images)")
    images.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    images.add_argument("--digests", action="store_true", help="show manifest digests")
    images.add_argument("--no-trunc", action="store_true", help="full image IDs")
    images.add_argument("-f", "--filter", action="append", default=[], metavar="reference=PATTERN|dangling=true|false")
    images.add_argument("--format", default="table", help="table, json, or a Go template ({{.Repository}}:{{.Tag}})")

    tag = sub.add_parser("tag", help="give an image another name")
    tag.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    tag.add_argument("target", metavar="TARGET_IMAGE[:TAG]")

    rmi = sub.add_parser("rmi", help="remove image names, and images left without one")
    rmi.add_argument("images", nargs="+", metavar="IMAGE")
    rmi.add_argument("-f", "--force", action="store_true", help="remove even if a container uses it or it has several repositories")
    rmi.add_argument("--no-prune", action="store_true", help="accepted for docker compatibility (layers are left to `prune` anyway)")

    inspect = sub.add_parser("inspect", help="show images as JSON, like `docker image inspect`")
    inspect.add_argument("images", nargs="+", metavar="IMAGE")
    inspect.add_argument("-f", "--format", default="", help="a Go template ({{.Id}}, {{json .Config}})")

    history = sub.add_parser("history", help="show the steps that made an image")
    history.add_argument("image", metavar="IMAGE")
    history.add_argument("--no-trunc", action="store_true", help="full IDs and commands")
    history.add_argument("-q", "--quiet", action="store_true", help="only image IDs")
    history.add_argument("-H", "--human", default="true", choices=("true", "false"), help="human-readable times and sizes")
    history.add_argument("--format", default="table", help="table, json, or a Go template")

    save = sub.add_parser("save", help="write images to a tar archive (docker-archive or OCI layout)")
    save.add_argument("images", nargs="+", metavar="IMAGE")
    save.add_argument("-o", "--output", help="the archive file (default: stdout)")
    save.add_argument("--format", choices=("docker", "oci"), default="docker", help="docker-archive (default) or an OCI layout tar")

    load = sub.add_parser("load", help="load images from a tar archive (docker save, shipyard save, OCI layout)")
    load.add_argument("-i", "--input", help="the archive (default: stdin); may be gzip/zstd/xz compressed")
    load.add_argument("-q", "--quiet", action="store_true", help="accepted for docker compatibility")


def run_image_command(args: argparse.Namespace) -> int:
    command = args.command
    if command == "images":
        from engine.commands.images import run_images

        return run_images(args)
    if command in ("tag", "rmi"):
        from engine.commands import rmi

        return rmi.run_tag(args) if command == "tag" else rmi.run_rmi(args)
    if command in ("inspect", "history"):
        from engine.commands import inspect

        return inspect.run_inspect(args) if command == "inspect" else inspect.run_history(args)
    from engine.commands import saveload

    return saveload.run_save(args) if command == "save" else saveload.run_load(args)
