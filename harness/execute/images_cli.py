"""`flora-eval images build|check|list [LANG...]`: build the base and language images (only
the missing and stale ones unless --rebuild), run every built image's canaries, list what is built."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="images_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build the base image and language images (missing or stale ones)")
    build.add_argument("langs", nargs="*", metavar="LANG", help="languages (default: py)")
    build.add_argument("--all", action="store_true", help="every language with a TOML file")
    build.add_argument("--rebuild", action="store_true", help="rebuild even when the image exists")
    check = sub.add_parser("check", help="run the canaries of every built image (exit 1 if any fails)")
    check.add_argument("langs", nargs="*", metavar="LANG", help="languages (default: every built one)")
    sub.add_parser("list", help="languages, their images and toolchain versions")


def run(args: argparse.Namespace) -> int:
    return {"build": cmd_build, "check": cmd_check, "list": cmd_list}[args.images_command](args)


def _langs(keys: list[str]):
    from harness.execute.languages import all_languages, load_language

    return [load_language(k) for k in keys] if keys else all_languages()


def cmd_build(args: argparse.Namespace) -> int:
    from harness.execute import images
    from harness.execute.sandbox import docker_client

    client = docker_client()
    if args.rebuild and not args.langs and not args.all:
        images.ensure_base(client, rebuild=True)
    else:
        images.ensure_base(client)
    langs = _langs([] if args.all else (args.langs or ["py"]))
    for lang in langs:
        image = images.language_image(client, lang)
        stale = image is not None and images.is_stale(image, lang)
        if stale and not args.rebuild:
            images.log(f"{lang.image_tag} was built from another containers/{lang.key}/: building it again")
        image_id = images.ensure_language(client, lang, rebuild=args.rebuild or stale)
        print(f"{lang.key}\t{lang.image_tag}\t{image_id[:19]}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from harness.errors import UserError
    from harness.execute import images
    from harness.execute.engine import Executor, canary_problem
    from harness.execute.sandbox import docker_client

    client = docker_client()
    langs = _langs(args.langs)
    failed = 0
    with Executor(build_missing=False, cache=None) as executor:
        for lang in langs:
            if images.language_image(client, lang) is None:
                if args.langs:
                    print(f"{lang.key}\tNOT BUILT\trun `flora-eval images build {lang.key}`")
                    failed += 1
                continue
            try:
                good, bad = executor.canary_results(lang)
            except UserError as exc:
                print(f"{lang.key}\tFAIL\t{exc}")
                failed += 1
                continue
            problem = canary_problem(lang, good, bad)
            print(f"{lang.key}\t{'FAIL' if problem else 'ok'}\tgood: {good.status}, bad: {bad.status}"
                  + (f"\t{problem}" if problem else ""))
            failed += bool(problem)
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    from harness.execute import images
    from harness.execute.languages import all_languages
    from harness.execute.sandbox import docker_client

    client = docker_client()
    for lang in all_languages():
        image = images.language_image(client, lang)
        if image is None:
            print(f"{lang.key}\t{lang.image_tag}\tnot built")
            continue
        labels = images.image_labels(image)
        stale = images.is_stale(image, lang)
        version = labels.get(f"{images.LABEL_PREFIX}.toolchain", "?")
        note = "  (stale: Dockerfile changed; images build --rebuild)" if stale else ""
        print(f"{lang.key}\t{lang.image_tag}\t{image.short_id}\t{version}{note}")
    return 0
