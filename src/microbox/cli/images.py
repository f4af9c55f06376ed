"""`microbox image ...`: build, pull, push, login, import, list, inspect, rm, prune, tag,
warm; and Docker's `pull` and `images`."""

from __future__ import annotations

import sys
from typing import Any

import click

from microbox.cli.common import common_options, guarded, shape_options
from microbox.cli.output import Out
from microbox.cli.progress import CliProgress
from microbox.cli.render import ago, print_table
from microbox.images.progress import human
from microbox.sdk import Image, Runtime


def _row(i: Image) -> dict[str, Any]:
    return {"name": i.name, "digest": i.digest, "size": i.size, "disk_bytes": i.disk_bytes,
            "layers_bytes": i.layers_bytes, "source": i.source, "created_at": i.created_at,
            "image_id": i.image_id, "layers": list(i.layers), "config": i.config.to_oci()}


def show_image(out: Out, img: Image) -> None:
    """An image a command made: its row with --json, else its name and digest."""
    out.result(_row(img), f"{img.name} {img.digest[:19]}")


@click.group()
def image() -> None:
    """Images: build, pull, push, import, list, inspect, rm, prune, tag, login."""


@image.command("build")
@click.argument("name")
@click.option("--force", is_flag=True, help="Rebuild even if present.")
@click.option("--include", "include", metavar="PKG,...",
              help="More Debian packages in a debian image.")
@common_options
def build_cmd(name: str, force: bool, include: str | None, as_json: bool,
              verbose: bool) -> None:
    """Build a built-in image: busybox, or debian[:SUITE] (kept if already present)."""
    out = Out("image build", as_json, verbose)

    def body() -> None:
        extra = [p for p in (include or "").split(",") if p]
        with Runtime() as rt, CliProgress(out) as progress:
            img = rt.images.build_builtin(name, force=force, include=extra,
                                          progress=progress)
        show_image(out, img)

    guarded(out, body)


@image.command("warm")
@click.argument("name")
@shape_options
@common_options
def warm_cmd(name: str, cpus: int, memory: int, accel: str, net: str, as_json: bool,
             verbose: bool) -> None:
    """Make the warm-start template of NAME's boxes of this shape now (the first
    box would make it otherwise); later boxes restore from it in a tenth of a second."""
    out = Out("image warm", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt:
            key = rt.images.warm(name, cpus=cpus, memory_mib=memory, accel=accel, net=net)
        out.result({"image": name, "template": key}, f"template {key} is ready")

    guarded(out, body)


@image.command("pull")
@click.argument("ref")
@click.option("--insecure", is_flag=True,
              help="Plain HTTP to this registry (loopback registries never need it).")
@common_options
def pull_cmd(ref: str, insecure: bool, as_json: bool, verbose: bool) -> None:
    """Pull REF ([REGISTRY/]NAME[:TAG][@DIGEST]) from an OCI registry."""
    out = Out("image pull", as_json, verbose)

    def body() -> None:
        with Runtime() as rt, CliProgress(out) as progress:
            img = rt.images.pull(ref, insecure=insecure, progress=progress)
        show_image(out, img)

    guarded(out, body)


@image.command("push")
@click.argument("name")
@click.argument("ref")
@click.option("--insecure", is_flag=True,
              help="Plain HTTP (or an untrusted certificate) to this registry "
                   "(loopback registries never need it).")
@common_options
def push_cmd(name: str, ref: str, insecure: bool, as_json: bool, verbose: bool) -> None:
    """Push image NAME to a registry as REF (REGISTRY/REPO[:TAG]): one layer, the
    root file system of a throwaway box of NAME, and NAME's config."""
    out = Out("image push", as_json, verbose)

    def body() -> None:
        with Runtime(log=out.log) as rt, CliProgress(out) as progress:
            pushed = rt.images.push(name, ref, insecure=insecure, progress=progress)
        out.result(pushed.to_json(), f"{pushed.ref} {pushed.digest}")

    guarded(out, body)


@image.command("login")
@click.argument("registry")
@click.option("-u", "--username", help="User name (asked on a terminal if not given).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--insecure", is_flag=True, help="Plain HTTP to this registry.")
@common_options
def login_cmd(registry: str, username: str | None, password_stdin: bool, insecure: bool,
              as_json: bool, verbose: bool) -> None:
    """Check credentials with REGISTRY and keep them (0600) for pulls."""
    out = Out("image login", as_json, verbose)

    def body() -> None:
        user = username
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        elif sys.stdin.isatty():
            user = user or click.prompt("Username", err=True)
            password = click.prompt("Password", hide_input=True, err=True)
        else:
            raise click.UsageError("no terminal to ask for the password; use --password-stdin")
        if not user:
            raise click.UsageError("give a user name with -u")
        Runtime().images.login(registry, user, password, insecure=insecure)
        out.result({"registry": registry, "username": user}, "Login Succeeded")

    guarded(out, body)


@image.command("import")
@click.argument("source")
@click.option("--name", "name", required=True, help="Name of the new image.")
@common_options
def import_cmd(source: str, name: str, as_json: bool, verbose: bool) -> None:
    """Make an image from a root filesystem: a directory, a tarball, or - for stdin."""
    out = Out("image import", as_json, verbose)

    def body() -> None:
        with Runtime() as rt, CliProgress(out) as progress:
            src = sys.stdin.buffer if source == "-" else source
            img = rt.images.import_rootfs(src, name, progress=progress)
        show_image(out, img)

    guarded(out, body)


@image.command("list")
@click.option("-q", "--quiet", is_flag=True, help="Print names only.")
@common_options
def list_cmd(quiet: bool, as_json: bool, verbose: bool) -> None:
    """List images with the disk they use (built-in ones are built on first use)."""
    out = Out("image list", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            images = rt.images.list()
        if out.as_json:
            out.result([_row(i) for i in images])
            return
        if quiet:
            for i in images:
                click.echo(i.name)
            return
        print_table(["NAME", "DIGEST", "DISK", "LAYERS", "CREATED", "SOURCE"],
                    [[i.name, i.digest[7:19], human(i.disk_bytes),
                      human(i.layers_bytes) if i.layers else "-", ago(i.created_at), i.source]
                     for i in images])
        missing = [n for n in Runtime().images.builtin() if n not in {i.name for i in images}]
        if missing:
            click.echo(f"(built on first use: {', '.join(missing)})")

    guarded(out, body)


@image.command("inspect")
@click.argument("name")
@common_options
def inspect_cmd(name: str, as_json: bool, verbose: bool) -> None:
    """Everything known about an image, as JSON."""
    import json

    out = Out("image inspect", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            img = rt.images.get(name)
            data = {**_row(img), "boxes": rt.images.users(img.name)}
        out.result(data, json.dumps(data, indent=2))

    guarded(out, body)


@image.command("rm")
@click.option("-f", "--force", is_flag=True, help="Remove even while boxes use it "
              "(they keep working; the file goes once nothing uses it).")
@click.argument("names", nargs=-1, required=True)
@common_options
def rm_cmd(force: bool, names: tuple[str, ...], as_json: bool, verbose: bool) -> None:
    """Remove images."""
    out = Out("image rm", as_json, verbose)

    def body() -> None:
        removed = []
        with Runtime() as rt:
            for n in names:
                removed.append(rt.images.remove(n, force=force).name)
                if not out.as_json:
                    click.echo(removed[-1])
        out.result({"removed": removed})

    guarded(out, body)


@image.command("prune")
@click.option("-a", "--all", "every", is_flag=True, help="Also remove images no box uses.")
@common_options
def prune_cmd(every: bool, as_json: bool, verbose: bool) -> None:
    """Remove unused image files, cached layers and abandoned work."""
    out = Out("image prune", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            removed = rt.images.prune(all=every)
        out.result({"removed": removed}, "\n".join(removed) if removed else None)

    guarded(out, body)


@image.command("tag")
@click.argument("source")
@click.argument("target")
@common_options
def tag_cmd(source: str, target: str, as_json: bool, verbose: bool) -> None:
    """Give image SOURCE a second name TARGET."""
    out = Out("image tag", as_json, verbose)

    def body() -> None:
        with Runtime() as rt:
            show_image(out, rt.images.tag(source, target))

    guarded(out, body)


image.add_command(list_cmd, name="ls")
image.add_command(rm_cmd, name="remove")
