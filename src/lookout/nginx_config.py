"""The nginx configuration that makes nginx write lookout's input: the seed's record schema,
one JSON object a line (`lookout nginx-config` prints it; the nginx tests load it into a real nginx).

Guarantee: the snippet's fields are the ones `lookout.records` reads, every value a string, and
`$msec` as @timestamp (no parsing, no time zone)."""

from __future__ import annotations

FORMAT_NAME = "lookout"
COUNTRY_VAR = "$lookout_country"


def nginx_config(
    server: str | None = None,
    access_log: str = "/var/log/nginx/access.log",
    geo: dict[str, str] | None = None,
    format_name: str = FORMAT_NAME,
) -> str:
    """The http-block snippet that makes nginx write the seed's record schema, one JSON object a line.

    Every value is a string, as in the seed's records; `$msec` (epoch seconds with
    milliseconds) is @timestamp, so event time needs no parsing and no time zone. `geo` adds
    real entries to the country table (the tests use it); the printed example has them commented.
    The fields and their variables are lookout.schema's (path, user_agent, referer, bytes included)."""
    from lookout.sources.nginx import json_log_format

    server_value = server.replace('"', "") if server else "$hostname"
    if geo:
        entries = "".join(f"    {net:<18} {cc};\n" for net, cc in geo.items())
    else:
        entries = (
            "    # 203.0.113.0/24   NL;     # one line per network, e.g. generated from a GeoIP CSV\n    # 2001:db8::/32    DE;\n"
        )
    return f"""\
# lookout: nginx writes the seed's record schema, one JSON object per line.
# Put this in the http {{}} block (nginx >= 1.11.8 for escape=json), then `nginx -s reload`.

# Country of the client ("-" = unknown). Either a geo table (matches $remote_addr, i.e. the
# client address after set_real_ip_from/real_ip_header) ...
geo {COUNTRY_VAR} {{
    default            -;
{entries}}}
# ... or a map from a header your CDN sets (use it instead of the geo block above):
# map $http_cf_ipcountry {COUNTRY_VAR} {{ default $http_cf_ipcountry; "" -; }}
# ... or the GeoIP2 module (libnginx-mod-http-geoip2) with a MaxMind database:
# geoip2 /usr/share/GeoIP/GeoLite2-Country.mmdb {{ {COUNTRY_VAR} default=- country iso_code; }}
# Without any of them, drop the "country" line: `lookout run --tail … --geoip DB.mmdb` fills it in.

log_format {format_name} escape=json
  '{{'
{json_log_format({"server": server_value, "country": COUNTRY_VAR})}
  '}}';

access_log {access_log} {format_name};
"""
