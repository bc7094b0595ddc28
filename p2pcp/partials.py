"""``p2pcp receive --list-partials`` and ``--clean-partials``: the hidden ``.NAME.p2pcp-part``
files a broken transfer leaves for a later resume, which ``rm dir/*`` does not catch."""

from __future__ import annotations

import json
import os
import time
from typing import NoReturn

import typer

from . import config
from .errors import P2pcpError
from .escape import show
from .output import OutputDir
from .units import human_size


def partials(output: str | None, clean: bool, json_mode: bool) -> NoReturn:
    """List (or delete) the partial files under the output directory, then exit."""
    try:
        target = os.path.expanduser(config.effective({"output": output})["output"].value)
        found = OutputDir(target, overwrite=False).partials()
    except P2pcpError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(int(exc.exit_code)) from None
    for path, _ in found if clean else ():
        try:
            os.unlink(path)
        except OSError as exc:
            typer.echo(f"error: cannot remove {show(path)}: {exc.strerror}", err=True)
            raise typer.Exit(1) from None
    if json_mode:
        items = [{"path": path, "bytes": st.st_size, "modified": st.st_mtime} for path, st in found]
        typer.echo(json.dumps({"removed" if clean else "partials": items}))
        raise typer.Exit(0)
    now = time.time()
    for path, st in found:
        age = (now - st.st_mtime) / 86400
        verb = "removed " if clean else ""
        typer.echo(f"{verb}{show(path)}  {human_size(st.st_size)}  {age:.0f} days old", err=True)
    total = human_size(sum(st.st_size for _, st in found))
    summary = "removed" if clean else "kept to resume; --clean-partials removes them"
    typer.echo(f"{len(found)} partial files, {total}: {summary}", err=True)
    raise typer.Exit(0)
