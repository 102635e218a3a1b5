"""The `lookout` command group: global options (`--version`, `--config`), the error → exit-code
mapping (`LookoutGroup`), and the registration of every command module. The command modules never
import this one (it imports them), so the command line has no import cycle."""

from __future__ import annotations

from pathlib import Path

import click

from lookout.cli import check, deploy, generate, kafka, nginx, query, rules, run, spark
from lookout.cli.errors import LookoutGroup
from lookout.rules import RulesError


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """A YAML settings file becomes click's default_map: per command, option name -> value;
    a `common:` section applies to every command that has the option. Precedence: command line,
    then environment (LOOKOUT_KAFKA, ...), then this file, then built-in defaults."""
    if not value:
        return
    from lookout.rules import safe_yaml

    try:
        data = safe_yaml(Path(value).read_text(), value) or {}
    except (OSError, UnicodeDecodeError, RulesError) as e:
        raise click.BadParameter(str(e)) from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{value}: expected a mapping of command: {{option: value}}")
    common = data.pop("common", None) or {}
    group = ctx.command
    assert isinstance(group, click.Group)
    default_map: dict[str, dict] = {}

    def key(k: str) -> str:
        return k.lstrip("-").replace("-", "_")

    for name, cmd in group.commands.items():
        # an option is known by its flag (`out`, `idle-timeout`) or its parameter name (`out_dir`)
        names = {key(o): p.name for p in cmd.params for o in [*p.opts, p.name or ""] if o}
        section = data.get(name) or {}
        unknown = {k for k in section if key(k) not in names}
        if unknown:
            raise click.BadParameter(f"{value}: {name}: unknown option(s) {', '.join(sorted(unknown))}")
        merged = {names[key(k)]: v for k, v in common.items() if key(k) in names}
        merged.update({names[key(k)]: v for k, v in section.items()})
        if merged:
            default_map[name] = merged
    stray = set(data) - set(group.commands)
    if stray:
        raise click.BadParameter(f"{value}: unknown command section(s) {', '.join(sorted(stray))}")
    ctx.default_map = default_map


@click.group(cls=LookoutGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="lookout")
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False),
    envvar="LOOKOUT_CONFIG",
    is_eager=True,
    expose_value=False,
    callback=_load_config,
    help="Settings file (YAML): `common:` and per-command sections of option: value.",
)
def main() -> None:
    """lookout: anomaly alerts and per-minute analytics from NGINX access-log streams."""
    from lookout.safe_text import guard_last_resort

    guard_last_resort()


for command in (
    rules.rules,
    run.replay,
    run.run,
    query.count,
    query.search,
    query.serve,
    generate.generate,
    kafka.produce,
    kafka.consume,
    nginx.nginx_config,
    nginx.ship,
    spark.spark,
    check.check,
    deploy.kibana_setup,
):
    main.add_command(command)
