"""`lookout rules`: the effective rules, validated."""

from __future__ import annotations

import click

from lookout.cli.options import rules_option, ruleset


@click.command()
@rules_option
@click.option("--check", is_flag=True, help="Only validate; print nothing on success.")
def rules(rules_path: str | None, check: bool) -> None:
    """Print the effective rules (validated)."""
    rs = ruleset(rules_path, None)
    if not check:
        click.echo(rs.to_yaml(include_notify=True), nl=False)
