"""The ``lightspeed`` command: ``serve`` (default) and ``check-config``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from lightspeed import __version__
from lightspeed.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_FILE,
    Config,
    authorization_warnings,
    config_to_dict,
    load_config,
    resolve_config_path,
)
from lightspeed.errors import ConfigError, LightspeedError
from lightspeed.workers import EXIT_CONFIG, report, run_worker, setup_logging, supervise

__all__ = ["main"]

log = logging.getLogger("lightspeed")

_SUBCOMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help=f"configuration file (default: ${CONFIG_ENV_VAR}, else ./{DEFAULT_CONFIG_FILE}, else embedded defaults)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightspeed", description="Answer LLM questions and collect what users do with them."
    )
    parser.add_argument("--version", action="version", version=f"lightspeed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the HTTP service (the default command)")
    _add_config_arg(serve)
    serve.add_argument("--host", help="address to listen on (overrides service.host)")
    serve.add_argument("--port", type=int, help="port to listen on (overrides service.port)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a configuration file and print the effective configuration")
    _add_config_arg(check)
    check.set_defaults(func=cmd_check_config)

    collect = sub.add_parser(
        "collect", help="ship stored records to the ingress (--once: one cycle; else every collection_interval)"
    )
    _add_config_arg(collect)
    collect.add_argument(
        "--once", action="store_true", help="one cycle, then exit: 0 when everything pending was shipped, 1 otherwise"
    )
    collect.add_argument(
        "--dry-run",
        action="store_true",
        help="build the next archive exactly as it would be uploaded and list its members (or --output it);"
        " nothing is uploaded, acked or deleted",
    )
    collect.add_argument("--output", metavar="FILE", help="with --dry-run: write the archive to FILE")
    collect.set_defaults(func=cmd_collect)

    purge = sub.add_parser(
        "purge",
        help="erase a user's conversations and stored records (or one conversation) from the store",
        description="Erase from the configured store, safely while the service and collectors run:"
        " with --user-id or --user-hash every conversation the user owns and every transcript and"
        " feedback record of the user, collected or not; with --conversation-id one conversation"
        " with its records. Prints what it removed, and the records a collector was uploading at"
        " that moment (the only ones that may still reach the ingress).",
    )
    _add_config_arg(purge)
    what = purge.add_mutually_exclusive_group(required=True)
    what.add_argument("--user-id", metavar="ID", help="the user id as authentication gives it")
    what.add_argument("--user-hash", metavar="SHA256", help="the user as stored: the SHA-256 hex digest of the id")
    what.add_argument("--conversation-id", metavar="ID", help="one conversation")
    purge.add_argument("--json", action="store_true", help="print the report as JSON")
    purge.set_defaults(func=cmd_purge)
    exporter = sub.add_parser(
        "exporter",
        help="a drop-in for the upstream exporter sidecar (see lightspeed exporter --help)",
        add_help=False,
    )
    exporter.add_argument("exporter_args", nargs=argparse.REMAINDER)
    exporter.set_defaults(func=cmd_exporter)

    ingress = sub.add_parser(
        "ingress", help="run a local ingress emulator (see lightspeed ingress --help)", add_help=False
    )
    ingress.add_argument("ingress_args", nargs=argparse.REMAINDER)
    ingress.set_defaults(func=cmd_ingress)
    return parser


def _load(args: argparse.Namespace, warnings: list[str] | None = None) -> tuple[Config, Path | None]:
    path = resolve_config_path(args.config)
    return load_config(path, warnings=warnings), path


def cmd_check_config(args: argparse.Namespace) -> int:
    from lightspeed.storage import StorageError, get_backend_class

    warnings: list[str] = []
    try:
        config, path = _load(args, warnings)
    except ConfigError as exc:
        report(exc)
        return 1
    for line in warnings:
        print(f"lightspeed: warning: {line}", file=sys.stderr)
    problems: list[str] = []
    udc = config.user_data_collection
    try:
        cls = get_backend_class(udc.storage.backend)
        problems += [f"user_data_collection.storage.options.{p}" for p in cls.check_options(udc.storage.options, udc)]
    except StorageError as exc:
        problems.append(f"user_data_collection.storage.backend: {exc}")
    if problems:
        report(ConfigError(problems, source=str(path) if path else None))
        return 1
    for warning in authorization_warnings(config):
        print(f"lightspeed: warning: {warning}", file=sys.stderr)
    print(f"# effective configuration from {path or 'the embedded defaults'} (secrets masked)")
    print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    try:
        config, path = _load(args, warnings)
    except ConfigError as exc:
        report(exc)
        return EXIT_CONFIG
    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            report(ConfigError([f"--port: must be between 0 and 65535, got {args.port}"]))
            return EXIT_CONFIG
        overrides["port"] = args.port
    if overrides:
        config = attrs.evolve(config, service=attrs.evolve(config.service, **overrides))
    setup_logging(config)
    from lightspeed.serving import raise_open_files_limit

    before, now = raise_open_files_limit()  # before the workers start: they inherit it
    if now != before:
        log.info("open-files limit raised from %d to %d (the hard limit)", before, now)
    else:
        log.info("open-files limit: %d", now)
    if path is None:
        udc = config.user_data_collection
        log.warning(
            "no configuration file given (-c/--config, $%s) or found (./%s): starting on the embedded defaults: "
            "filesystem storage (feedback in %s, transcripts in %s), the echo LLM provider, data collector off",
            CONFIG_ENV_VAR,
            DEFAULT_CONFIG_FILE,
            udc.feedback_storage,
            udc.transcripts_storage,
        )
    else:
        log.info("configuration loaded from %s", path)
    for line in warnings:
        log.warning("%s", line)
    # Build once in the parent so that a bad backend or option fails before anything listens.
    try:
        from lightspeed.app import create_app

        create_app(config)
    except LightspeedError as exc:
        report(exc)
        return EXIT_CONFIG
    if config.service.workers == 1:
        try:
            return run_worker(config, reuse_port=False)
        except OSError as exc:  # the port is taken, the address is not ours, ...
            report(LightspeedError(f"cannot listen on {config.service.host}:{config.service.port}: {exc}"))
            return EXIT_CONFIG
    return supervise(config)


def cmd_collect(args: argparse.Namespace) -> int:
    import asyncio

    from lightspeed.collector.run import collector_config_problems, run_collect

    if args.output and not args.dry_run:
        report(ConfigError(["--output: only with --dry-run"]))
        return EXIT_CONFIG
    try:
        config, path = _load(args)
        problems = [] if args.dry_run else collector_config_problems(config)
        if problems:
            raise ConfigError(problems, source=str(path) if path else None)
        from lightspeed.storage import create_backend

        create_backend(config.user_data_collection)  # a bad backend or option fails here, clearly
    except LightspeedError as exc:
        report(exc)
        return EXIT_CONFIG
    setup_logging(config)
    if args.dry_run:
        from lightspeed.collector.run import run_dry_run

        return asyncio.run(run_dry_run(config, output=Path(args.output) if args.output else None))
    return asyncio.run(run_collect(config, once=args.once))


def cmd_purge(args: argparse.Namespace) -> int:
    import asyncio

    from lightspeed.purge import PurgeTarget, purge, report_json, report_text
    from lightspeed.records import canonical_conversation_id, is_valid_user_hash
    from lightspeed.storage import StorageError, create_backend

    conversation_id = args.conversation_id
    if conversation_id is not None:
        conversation_id = canonical_conversation_id(conversation_id)
        if conversation_id is None:
            print(f"lightspeed purge: error: {args.conversation_id!r} is not a conversation id", file=sys.stderr)
            return EXIT_CONFIG
    if args.user_hash is not None and not is_valid_user_hash(args.user_hash):
        print("lightspeed purge: error: --user-hash must be 64 lower-case hexadecimal digits", file=sys.stderr)
        return EXIT_CONFIG
    if args.user_id == "":
        print("lightspeed purge: error: --user-id must not be empty", file=sys.stderr)
        return EXIT_CONFIG
    target = PurgeTarget(user_id=args.user_id, user_hash=args.user_hash, conversation_id=conversation_id)
    try:
        config, _ = _load(args)
        create_backend(config.user_data_collection)  # a bad backend or option fails here, clearly
    except LightspeedError as exc:
        report(exc)
        return EXIT_CONFIG
    try:
        deletion = asyncio.run(purge(config, target))
    except StorageError as exc:
        print(f"lightspeed purge: error: nothing was purged: {exc}", file=sys.stderr)
        return 1
    print(report_json(target, deletion) if args.json else report_text(target, deletion))
    return 0


def cmd_exporter(args: argparse.Namespace) -> int:
    from lightspeed.exporter.command import main as exporter_main

    return exporter_main(args.exporter_args)


def cmd_ingress(args: argparse.Namespace) -> int:
    from lightspeed.ingress import main as ingress_main

    try:
        return ingress_main(args.ingress_args)
    except OSError as exc:  # the port is taken, --store names a file, ...
        print(f"lightspeed ingress: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


_SUBCOMMANDS.update(
    {
        "serve": cmd_serve,
        "check-config": cmd_check_config,
        "collect": cmd_collect,
        "purge": cmd_purge,
        "ingress": cmd_ingress,
        "exporter": cmd_exporter,
    }
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightspeed`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and not args_list[0].startswith("-") and args_list[0] not in _SUBCOMMANDS:
        _parser().error(f"unknown command {args_list[0]!r} (choose from {', '.join(_SUBCOMMANDS)})")
    if not args_list or (args_list[0] not in _SUBCOMMANDS and args_list[0] not in ("-h", "--help", "--version")):
        args_list.insert(0, "serve")
    if args_list[0] == "ingress":  # its own options, parsed by the emulator
        return cmd_ingress(argparse.Namespace(ingress_args=args_list[1:]))
    if args_list[0] == "exporter":  # the upstream exporter's options
        return cmd_exporter(argparse.Namespace(exporter_args=args_list[1:]))
    args = _parser().parse_args(args_list)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)
