"""`lookout kibana-setup`: the deployment's Kibana objects (`lookout.kibana`)."""

from __future__ import annotations

import sys

import click


@click.command("kibana-setup")
@click.argument("url", envvar="LOOKOUT_KIBANA_URL")
@click.option("--user", envvar="LOOKOUT_KIBANA_USER", default=None, help="Basic-auth user (env LOOKOUT_KIBANA_USER).")
@click.option(
    "--password",
    envvar="LOOKOUT_KIBANA_PASSWORD",
    default=None,
    help="Basic-auth password (env LOOKOUT_KIBANA_PASSWORD; better than the command line).",
)
@click.option("--api-key", envvar="LOOKOUT_KIBANA_API_KEY", default=None, help="API key (base64), instead of user/password.")
@click.option("--space", default=None, help="Kibana space (default: the default space).")
@click.option("--wait", default=120.0, show_default=True, help="Seconds to wait for a Kibana that is still starting.")
@click.option("--ca-certs", type=click.Path(dir_okay=False), default=None, help="CA bundle for https.")
@click.option("--insecure", is_flag=True, help="Do not verify Kibana's TLS certificate.")
def kibana_setup(
    url: str,
    user: str | None,
    password: str | None,
    api_key: str | None,
    space: str | None,
    wait: float,
    ca_certs: str | None,
    insecure: bool,
) -> None:
    """Import lookout's data views, visualizations and dashboard into Kibana at URL (idempotent)."""
    from lookout.check import clean
    from lookout.kibana import KibanaError, import_saved_objects

    try:
        res = import_saved_objects(
            url, user=user, password=password, api_key=api_key, space=space, wait=wait, ca_certs=ca_certs, verify=not insecure
        )
    except KibanaError as e:
        click.echo(f"✘ kibana-setup: {clean(e)}", err=True)
        sys.exit(1)
    for typ, oid, title in res.objects:
        click.echo(f"✔ {typ:<14} {oid:<34} {clean(title)}")
    click.echo(f"imported {res.imported} objects into {clean(res.url)} (overwrite: running it again changes nothing)")
