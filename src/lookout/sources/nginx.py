"""nginx access-log lines → seed-schema JSON lines.

Two formats reach lookout from a real nginx:

- **json**: `log_format … escape=json` in the seed's schema (`lookout nginx-config` prints it).
  Such lines are passed on unchanged (the record contract judges them).
- **combined**: nginx's default, `$remote_addr - $remote_user [$time_local] "$request" $status
  $body_bytes_sent "$http_referer" "$http_user_agent"` (the common format without the last two
  fields parses too: referer and user agent are then unknown). `path` is the second word of the
  request line, `bytes` is $body_bytes_sent; nginx's `\\xHH` escapes (Apache's `\\"` too) are
  undone, so values read as the JSON format writes them. It carries no host, country or request
  time: host comes from `--host`, country from an optional MaxMind-format database,
  request_time is unknown ("-").

`auto` decides per line: a line starting with `{` is JSON, anything else is combined — so a log
whose format was switched by a reload is read correctly on both sides of the switch.

Nothing is dropped here. A line that is not combined is passed on unchanged, so the record
contract rejects it (it is not JSON either) and it lands in the dead letters with its raw text;
its more precise reason (`invalid-combined-line`) is put in `Chunk.meta["reasons"]`. A line
that *is* combined but carries a bad field (a host name for an address, status `-`, an
impossible date) is converted with that field as written, and the contract rejects it with the
field's own reason (`invalid-client_ip`, `invalid-status`, `invalid-timestamp`).
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from lookout.schema import FIELDS

log = logging.getLogger("lookout.nginx")

FORMATS = ("auto", "json", "combined")
UNKNOWN = "-"
INVALID_COMBINED = "invalid-combined-line"

# $remote_addr $ident/$remote_user… [$time_local] "$request" $status $body_bytes_sent[ "$http_referer"
# "$http_user_agent"][ …]. $remote_user may hold spaces (it is whatever the client sent); quoted
# fields escape quotes as \x22 (nginx) or \" (Apache), both handled. Referer and user agent are
# optional (the common format has neither).
_REQUEST = rb'"([^"\\]*(?:\\.[^"\\]*)*)"'  # a quoted field, backslash escapes allowed (unrolled: fast)
_TAIL = rb" (\S+) (\S+)(?: " + _REQUEST + rb" " + _REQUEST + rb")?(?: |$)"
_COMBINED = re.compile(rb"(\S+) \S+ [^\[]*? \[([^\]]*)\] " + _REQUEST + _TAIL)
_COMBINED_LOOSE = re.compile(rb"(\S+) \S+ .*? \[([^\]]*)\] " + _REQUEST + _TAIL)  # `[` in $remote_user
_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})|\\(.)", re.S)
_SIMPLE_ESCAPES = {b"n": b"\n", b"t": b"\t", b"r": b"\r"}
_TIME_LOCAL = re.compile(rb"(\d{1,2})/([A-Za-z]{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})")
_MONTHS = {
    m: i + 1
    for i, m in enumerate((b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec"))
}
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_ALL_JSON = re.compile(rb"\n[^{\n]")  # a line (after the first) that does not start with `{`


def unescape(field: bytes) -> str:
    """A quoted combined-format field as text: nginx's `\\xHH` and Apache's `\\"`, `\\\\`, `\\n` undone,
    then UTF-8 (invalid bytes replaced). Values are data: they are escaped again wherever shown."""
    if b"\\" in field:
        field = _ESCAPE.sub(
            lambda m: bytes([int(m.group(1), 16)]) if m.group(1) else _SIMPLE_ESCAPES.get(m.group(2), m.group(2)), field
        )
    return field.decode("utf-8", "replace")


def valid_utf8(data: bytes) -> bytes:
    """JSON lines from nginx as valid UTF-8. `escape=json` escapes quotes, backslashes and control
    bytes but writes bytes >= 0x80 as the client sent them, so a Latin-1 User-Agent, Referer or URI
    would make the whole line invalid UTF-8 and get the request rejected from every count; such
    bytes become U+FFFD instead (only the client-chosen value changes)."""
    if data.isascii():
        return data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace").encode()
    return data


def json_log_format(variables: dict[str, str]) -> str:
    """The lines of an nginx `log_format … escape=json` writing one record per line: every field of
    lookout.schema with its nginx variable (`variables` overrides some), every value a string."""
    pairs = [f'\'"{f.name}":"{variables.get(f.name, f.nginx)}"\'' for f in FIELDS]
    return "\n".join(f"    {p[:-1]},'" if i < len(pairs) - 1 else f"    {p}" for i, p in enumerate(pairs))


def default_host() -> str:
    """What combined lines get as `host` when --host is not given: this machine's name.

    The contract requires a host, so without one every combined line would be rejected and
    lookout would raise nothing at all. The machine's name is what a user tailing the log of
    this server expects; it stands for all the server's virtual hosts together."""
    return socket.gethostname() or "localhost"


@lru_cache(maxsize=4096)
def parse_time_local(text: bytes) -> int | None:
    """`17/May/2015:10:05:03 +0200` → epoch seconds (the offset honoured), None if not a time.

    Cached: a busy log repeats the same second many times."""
    m = _TIME_LOCAL.fullmatch(text)
    if m is None:
        return None
    d, mon_s, y, hh, mi, ss, sign, oh, om = m.groups()
    mon = _MONTHS.get(mon_s.lower())
    if mon is None:
        return None
    h, mnt, s = int(hh), int(mi), int(ss)
    if h > 23 or mnt > 59 or s > 60 or int(oh) > 23 or int(om) > 59:
        return None
    try:
        days = date(int(y), mon, int(d)).toordinal() - _EPOCH_ORDINAL
    except ValueError:  # 31/Feb and the like
        return None
    offset = (int(oh) * 3600 + int(om) * 60) * (1 if sign == b"+" else -1)
    return days * 86_400 + h * 3600 + mnt * 60 + s - offset


class GeoIP:
    """Country codes from a MaxMind-format (.mmdb) database: GeoLite2/GeoIP2 Country or City,
    DB-IP, or any database whose records carry `country.iso_code` or a `country` string."""

    def __init__(self, path: Path) -> None:
        import maxminddb

        try:
            self.reader = maxminddb.open_database(str(path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as e:
            raise ValueError(f"--geoip {path}: not a readable MaxMind database ({e})") from None
        self.country = lru_cache(maxsize=65536)(self._lookup)

    def _lookup(self, ip: str) -> str | None:
        try:
            rec: Any = self.reader.get(ip)
        except (ValueError, TypeError):  # not an address, or IPv6 in an IPv4-only database
            return None
        if not isinstance(rec, dict):
            return None
        for key in ("country", "registered_country"):
            v = rec.get(key)
            if isinstance(v, str) and v:
                return v
            if isinstance(v, dict) and isinstance(v.get("iso_code"), str):
                return v["iso_code"]
        return None

    def close(self) -> None:
        self.reader.close()


class LineConverter:
    """Turns raw log lines into seed-schema JSON lines, one output line per input line."""

    def __init__(
        self, log_format: str = "auto", host: str | None = None, geoip: Path | str | None = None, server: str | None = None
    ) -> None:
        if log_format not in FORMATS:
            raise ValueError(f"log format {log_format!r}: expected one of {', '.join(FORMATS)}")
        self.log_format = log_format
        self.host = host
        self.server = server
        self.geoip = GeoIP(Path(geoip)) if geoip else None
        self.combined_lines = 0  # counters for summaries (`ship`, logs)
        self.json_lines = 0
        self.unparsed_lines = 0

    # -------------------------------------------------------------- whole chunks

    def convert(self, data: bytes) -> tuple[bytes, dict[int, tuple[str, str]]]:
        """NDJSON of whole lines in → NDJSON out with the same line count and order, plus
        {line index: (reason, detail)} for lines passed on unchanged because they did not parse."""
        if not data:
            return data, {}
        if self.log_format == "json" or (self.log_format == "auto" and self._all_json(data)):
            if self.geoip is None:
                self.json_lines += data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
                return valid_utf8(data), {}
        lines = data.split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        reasons: dict[int, tuple[str, str]] = {}
        out = [self.convert_line(ln, i, reasons) for i, ln in enumerate(lines)]
        return b"\n".join(out) + b"\n", reasons

    @staticmethod
    def _all_json(data: bytes) -> bool:
        return data[:1] == b"{" and _ALL_JSON.search(data) is None

    # -------------------------------------------------------------- one line

    def convert_line(self, raw: bytes, index: int = 0, reasons: dict[int, tuple[str, str]] | None = None) -> bytes:
        """One raw line (no newline) → one JSON line, or the raw line when it cannot be read."""
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line.strip():
            return line
        fmt = self.log_format
        if fmt == "json" or (fmt == "auto" and line.lstrip()[:1] == b"{"):
            self.json_lines += 1
            line = valid_utf8(line)
            return self._json_line(line) if self.geoip is not None else line
        rec = self.parse_combined(line)
        if rec is None:
            self.unparsed_lines += 1
            if reasons is not None:
                reasons[index] = (
                    INVALID_COMBINED,
                    "not an nginx combined-format line" + (" nor a JSON object" if fmt == "auto" else ""),
                )
            return line
        self.combined_lines += 1
        return orjson.dumps(rec)

    def parse_combined(self, line: bytes) -> dict[str, str] | None:
        """The seed record of one combined line, or None when the line is not combined.

        Fields are taken as written; the record contract judges them (so `-` as status is
        rejected `invalid-status`, not silently dropped here)."""
        m = _COMBINED.match(line) or _COMBINED_LOOSE.match(line)
        if m is None:
            return None
        addr, tlocal, request, status, sent, referer, agent = m.groups()
        secs = parse_time_local(tlocal)
        client_ip = addr.decode("utf-8", "replace")
        words = request.split(b" ") if request not in (b"", b"-") else []
        method = words[0].decode("utf-8", "replace") if words else UNKNOWN
        country = (self.geoip.country(client_ip) if self.geoip is not None else None) or UNKNOWN
        rec = {
            "server": self.server or UNKNOWN,
            "client_ip": client_ip,
            "method": method or UNKNOWN,
            "status": status.decode("utf-8", "replace"),
            "request_time": UNKNOWN,
            "country": country,
            # not a time: handed on as written so the contract says `invalid-timestamp`
            "@timestamp": str(secs) if secs is not None else tlocal.decode("utf-8", "replace"),
            "path": unescape(words[1]) if len(words) > 1 and words[1] else UNKNOWN,
            "user_agent": unescape(agent) if agent is not None else UNKNOWN,
            "referer": unescape(referer) if referer is not None else UNKNOWN,
            "bytes": sent.decode("utf-8", "replace"),  # as written: the contract judges it (`invalid-bytes`)
        }
        if self.host is not None:
            rec["host"] = self.host
        return rec

    def _json_line(self, line: bytes) -> bytes:
        """A JSON line with country unknown gets it from the GeoIP database (else unchanged)."""
        assert self.geoip is not None
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return line
        if not isinstance(obj, dict) or obj.get("country") not in (None, "", UNKNOWN):
            return line
        ip = obj.get("client_ip")
        cc = self.geoip.country(ip) if isinstance(ip, str) else None
        if cc is None:
            return line
        obj["country"] = cc
        return orjson.dumps(obj)

    def close(self) -> None:
        if self.geoip is not None:
            self.geoip.close()


def converter_for(
    log_format: str, host: str | None, geoip: Path | str | None, announce: Callable[[str], None] = log.info
) -> LineConverter:
    """The converter `run --tail` and `ship` use: host defaults to this machine's name."""
    if host is None and log_format != "json":
        host = default_host()
        announce(f"combined-format lines carry no host: using this machine's name {host!r} (set one with --host)")
    return LineConverter(log_format, host=host, geoip=geoip)
