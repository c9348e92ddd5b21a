"""`shipyard import`: a root filesystem (directory or tarball) becomes a one-layer base image.

Like `docker import`: the image has one layer, an empty config unless `--change`
instructions set one, and a history entry "Imported from …". The layer is unpacked
straight into a snapshot, so `FROM` it costs nothing at build time.
"""

from __future__ import annotations

import argparse
import os
import sys

from engine.commands.common import isolate_mounts, state_root
from engine.errors import DockerfileError, UsageError


def run_import(args: argparse.Namespace) -> int:
    names = list(args.tag) + ([args.name] if args.name else [])
    if not names:
        raise UsageError("import needs a name: shipyard import ROOTFS -t NAME[:TAG]")
    from engine.reference import parse_reference

    for name in names:
        parse_reference(name)
    source = args.source
    if source != "-" and not os.path.exists(source):
        raise UsageError(f"{source}: no such file or directory")

    isolate_mounts()
    from engine.solver.context import Engine

    engine = Engine.open(state_root(args))
    try:
        config = _config_from_changes(args.change)
        snapshot = _unpack(engine, source)
        from engine.images import ImageStore, assemble_image
        from engine.layers import LayerBlobs
        from engine.oci.image import HistoryEntry, Image, Timestamp

        now = Timestamp.now()
        comment = args.message or f"Imported from {'-' if source == '-' else source}"
        spec = Image(created=now, config=config, history=(HistoryEntry(created=now, comment=comment),))
        built = assemble_image(engine, LayerBlobs(engine), spec, snapshot)
        ImageStore(engine).put(names, built)
        print(built.config_digest)
        return 0
    finally:
        engine.close()


def _config_from_changes(changes: list[str]):  # type: ignore[no-untyped-def]
    """Apply `--change` instructions (CMD, ENV, EXPOSE, …) as docker import does."""
    from engine.oci.image import ImageConfig
    from frontends.dockerfile.imageconfig import CONFIG_COMMANDS, apply_config_command
    from frontends.dockerfile.instructions import WorkdirCommand
    from frontends.dockerfile.parser import parse_instruction
    from frontends.dockerfile.shell_lexer import ShellLex

    config = ImageConfig()
    lex = ShellLex()
    for number, text in enumerate(changes, start=1):
        cmd = parse_instruction(text, "--change", number)
        env = dict(item.partition("=")[::2] for item in config.env)
        cmd = cmd.expand(lex, env, "--change")
        if isinstance(cmd, WorkdirCommand):
            import dataclasses

            config = dataclasses.replace(config, working_dir=cmd.path)
            continue
        if not isinstance(cmd, CONFIG_COMMANDS):
            raise DockerfileError(f"{cmd.NAME.upper()} is not allowed in --change", "--change", number)
        config = apply_config_command(config, cmd, cmd_set=False, filename="--change").config
    return config


def _unpack(engine, source: str) -> int:  # type: ignore[no-untyped-def]
    """Copy a directory, or extract a tarball, into a new base snapshot."""
    snapshotter = engine.snapshotter
    active = snapshotter.prepare(None)
    try:
        if source != "-" and os.path.isdir(source):
            from engine.fs.copy import CopyOptions, copy_into
            from engine.fs.selection import Selected

            root = os.path.abspath(source)
            copy_into(root, [Selected("", root, True, False)], active.root, "/", CopyOptions(preserve_owner=True))
        else:
            from engine.fs.extract import LayerLimitError, extract_layer
            from engine.limits import load_limits
            from engine.oci.compress import DecompressionLimitError, decompress_stream

            limits = load_limits()
            raw = sys.stdin.buffer if source == "-" else open(source, "rb")
            try:
                stream = decompress_stream(raw, max_bytes=limits.layer_bytes)
                mode = "overlay" if snapshotter.layer_format == "overlay" else "oci"
                extract_layer(stream, active.root, mode=mode, max_bytes=limits.layer_bytes, max_entries=limits.layer_entries)
            except (DecompressionLimitError, LayerLimitError) as exc:
                raise limits.exceeded(f"import {source}", exc) from None
            finally:
                if raw is not sys.stdin.buffer:
                    raw.close()
        return snapshotter.commit(active)
    except BaseException:
        snapshotter.abort(active)
        raise
