"""Docker images: the Debian trixie base (from a registry when one answers, else from a
debootstrap rootfs and `docker import`) and one image per language from
`containers/<key>/Dockerfile`, labelled with the toolchain's version."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import resources
from pathlib import Path

from harness.errors import UserError
from harness.execute.languages import Language

BASE_TAG = "flora-eval/base:trixie"
ROOTFS_TAG = "flora-eval/rootfs:trixie"
REGISTRY_ROOT = "debian:trixie-slim"
ROOTFS_ENV = "FLORA_EVAL_ROOTFS"
DEFAULT_ROOTFS = Path("/var/cache/flora-eval/rootfs-trixie")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
LABEL_PREFIX = "org.flora-eval"
SHARED = "shared"  # containers/shared/: files that several images' builds copy
VERSION_TIMEOUT_S = 120  # a toolchain's version command in a fresh image (JVMs start slowly)


def log(message: str) -> None:
    print(f"flora-eval images: {message}", file=sys.stderr, flush=True)


def context_dir(name: str) -> Path:
    """containers/<name>/ as a real directory (the package `harness.containers`)."""
    path = Path(str(resources.files("harness.containers") / name))
    if not (path / "Dockerfile").is_file():
        raise UserError(f"no containers/{name}/Dockerfile; add one to offer this language")
    return path


def context_files(name: str) -> list[tuple[str, Path]]:
    """What the build of containers/<name>/ sees, as (name in the context, file): its own
    files, and containers/shared/'s as shared/ when its Dockerfile copies from there (files
    more than one image needs, such as the JVM side of the warm-process protocol)."""
    root = context_dir(name)
    files = [(p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*")) if p.is_file()]
    if f"{SHARED}/" in (root / "Dockerfile").read_text(encoding="utf-8"):
        shared = root.parent / SHARED
        files += [(f"{SHARED}/{p.relative_to(shared).as_posix()}", p) for p in sorted(shared.rglob("*"))
                  if p.is_file()]
    return files


def dockerfile_hash(name: str) -> str:
    """A hash of what the build of containers/<name>/ sees: an image made from another
    version of it is stale."""
    digest = hashlib.sha256()
    for arcname, path in context_files(name):
        digest.update(arcname.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def find_image(client, tag: str):
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


# -- the base image ---------------------------------------------------------------------
def ensure_base(client, rebuild: bool = False) -> str:
    """The base image's id, building it when missing (or when `rebuild`)."""
    image = find_image(client, BASE_TAG)
    if image is not None and not rebuild:
        return image.id
    root = _root_image(client)
    log(f"building {BASE_TAG} from {root}")
    return _build(client, "base", BASE_TAG, {"ROOT": root},
                  labels={f"{LABEL_PREFIX}.image": "base", f"{LABEL_PREFIX}.root": root,
                          f"{LABEL_PREFIX}.dockerfile": dockerfile_hash("base")})


def _root_image(client) -> str:
    if find_image(client, REGISTRY_ROOT) is not None:
        return REGISTRY_ROOT
    try:
        client.images.pull(REGISTRY_ROOT)
        return REGISTRY_ROOT
    except Exception as exc:  # no registry here: DNS, TLS, proxy, rate limit ...
        log(f"registry unreachable ({type(exc).__name__}); using a debootstrap rootfs")
    if find_image(client, ROOTFS_TAG) is None:
        rootfs = ensure_rootfs(Path(os.environ.get(ROOTFS_ENV) or DEFAULT_ROOTFS))
        log(f"importing {rootfs} as {ROOTFS_TAG}")
        with tempfile.TemporaryDirectory() as tmp:
            tar = Path(tmp) / "rootfs.tar"
            subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tar), "."], check=True)
            repo, tag = ROOTFS_TAG.split(":")
            client.api.import_image(src=str(tar), repository=repo, tag=tag)
    return ROOTFS_TAG


def ensure_rootfs(target: Path) -> Path:
    """A Debian trixie minbase rootfs at `target` (kept as a cache), made with debootstrap."""
    if (target / "usr" / "bin" / "apt-get").exists():
        return target
    if os.geteuid() != 0:
        raise UserError(f"no Debian rootfs at {target} and no registry; run `flora-eval images build` "
                        "as root once (debootstrap needs root), or set FLORA_EVAL_ROOTFS")
    if shutil.which("debootstrap") is None:
        log("installing debootstrap")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap trixie into {target} (a few minutes)")
    done = subprocess.run(["debootstrap", "--variant=minbase", "trixie", str(partial), DEBIAN_MIRROR])
    if done.returncode != 0:
        raise UserError(f"debootstrap failed (exit {done.returncode}); "
                        f"check that {DEBIAN_MIRROR} is reachable")
    partial.rename(target)
    return target


# -- language images ----------------------------------------------------------------------
def language_image(client, lang: Language):
    return find_image(client, lang.image_tag)


def is_stale(image, lang: Language) -> bool:
    """Whether `image` was built from another version of containers/<key>/ than this one."""
    return image_labels(image).get(f"{LABEL_PREFIX}.dockerfile") != dockerfile_hash(lang.key)


def ensure_language(client, lang: Language, rebuild: bool = False) -> str:
    """The language image's id, building the base and the image when missing."""
    image = language_image(client, lang)
    if image is not None and not rebuild:
        return image.id
    base = ensure_base(client)
    log(f"building {lang.image_tag} from containers/{lang.key}/Dockerfile")
    started = time.monotonic()
    staged = _build(client, lang.key, f"{lang.image_tag}:staging", {"BASE": BASE_TAG})
    version = toolchain_version(client, staged, lang)
    labels = {f"{LABEL_PREFIX}.image": lang.key, f"{LABEL_PREFIX}.toolchain": version,
              f"{LABEL_PREFIX}.dockerfile": dockerfile_hash(lang.key), f"{LABEL_PREFIX}.base": base}
    image_id = _label(client, staged, lang.image_tag, labels)
    client.images.remove(f"{lang.image_tag}:staging", noprune=True)
    log(f"{lang.image_tag}: {version} (built in {time.monotonic() - started:.0f} s)")
    return image_id


def toolchain_version(client, image_id: str, lang: Language) -> str:
    if not lang.version:
        return "unknown"
    # run, wait, then read the logs: `containers.run(detach=False)` can lose a last line that
    # has no trailing newline (../shared/reference/sandbox.md)
    container = None
    try:
        container = client.containers.run(image_id, list(lang.version), detach=True, network_mode="none",
                                          labels={f"{LABEL_PREFIX}.purpose": "version"})
        status = container.wait(timeout=VERSION_TIMEOUT_S)
        out = container.logs(stdout=True, stderr=True)
        if status.get("StatusCode", 1) != 0:
            tail = out.decode(errors="replace").strip()[-200:]
            raise RuntimeError(f"exit {status.get('StatusCode')}: {tail}")
    except Exception as exc:
        raise UserError(f"{lang.key}: `{' '.join(lang.version)}` failed in the new image ({exc}); "
                        f"fix containers/{lang.key}/Dockerfile") from None
    finally:
        if container is not None:
            container.remove(force=True)
    lines = out.decode(errors="replace").strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _build(client, name: str, tag: str, buildargs: dict, labels: dict | None = None) -> str:
    """Build containers/<name>/ (with what `context_files` adds) as `tag`: the image's id."""
    import docker.errors

    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for arcname, path in context_files(name):
            tar.add(path, arcname=arcname)
    context.seek(0)
    try:
        image, _ = client.images.build(fileobj=context, custom_context=True, tag=tag, buildargs=buildargs,
                                       rm=True, forcerm=True, labels=labels or {})
    except docker.errors.BuildError as exc:
        tail = [c.get("stream", c.get("error", "")).strip() for c in exc.build_log][-8:]
        raise UserError(f"building {tag} failed: {' | '.join(t for t in tail if t)}") from None
    return image.id


def _label(client, image_id: str, tag: str, labels: dict) -> str:
    """Add labels known only after the build (the toolchain version) in a metadata-only layer."""
    lines = [f"FROM {image_id}"] + [f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()]
    image, _ = client.images.build(fileobj=io.BytesIO("\n".join(lines).encode()), tag=tag, rm=True)
    return image.id


def image_labels(image) -> dict:
    return {k: v for k, v in (image.labels or {}).items() if k.startswith(LABEL_PREFIX)}
