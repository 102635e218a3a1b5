"""`lookout check`: is this configuration usable, before a long run? One result per check.

Guarantees: every check ends within its timeout (the service checks run in threads and the
whole is bounded by `timeout * 2 + 1` seconds: a service that hangs gives a ✘ line, never a
stuck command); nothing is written anywhere except a probe file that is removed at once and,
on servers without a privileges API, an Elasticsearch index template named
`lookout-check-probe-<random>` that is deleted again; no secret (Kafka SASL/SSL passwords, the
Elasticsearch password or API key, userinfo in a URL) appears in any result; and a failure is a
result with a reason, never an exception. `dry_run` checks the options and the rules only, with
no network and no file system writes.

Kafka is checked through the connection `run` itself would build (`RunOptions.kafka_connection`,
a `lookout.kafka.KafkaConnection`): the same librdkafka settings, the same secret properties
(shown as `<redacted>`), the same consumer group and lock group.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lookout.checkpoint import CHECKPOINT_DIR, LEGACY_PICKLE
from lookout.kafka.config import REDACTED, KafkaConnection
from lookout.rules import RulesError, RuleSet, load_rules, parse_duration

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class CheckResult:
    """One line of the verdict: `ok` False fails the check (exit 1); `warn` marks an ok result
    that deserves a look (nothing verified, or something another process holds)."""

    name: str
    ok: bool
    detail: str
    warn: bool = False

    @property
    def mark(self) -> str:
        return "✘" if not self.ok else ("!" if self.warn else "✔")


@dataclass
class CheckOptions:
    """What `lookout run` would use (the CLI passes the same options to both)."""

    rules_path: str | None = None
    lateness: str | None = None
    kafka: KafkaConnection | None = None
    topic: str = "test-inter"
    partitions: int = 3
    es_url: str | None = None
    tail_path: str | None = None
    state_dir: str = ".lookout-state"
    out_dir: str = "lookout-out"
    timeout: float = 5.0


def clean(text: object) -> str:
    """Server-provided text on one terminal line: control characters escaped, length capped."""
    s = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    return s if len(s) <= 300 else s[:297] + "..."


def _redact(text: str, secrets: list[str]) -> str:
    for s in secrets:
        if s and len(s) >= 3:
            text = text.replace(s, REDACTED)
    return text


def option_results(error: ValueError) -> list[CheckResult]:
    """Options `run` would refuse, as result lines in words (no pydantic type codes or links): one
    per validation error of `RunOptions`, where a malformed `--kafka-config` fails the "kafka config"
    check and the rest "options"; a connection that cannot be built (`--kafka ''`) fails "kafka".
    Inputs are not shown (they may hold secrets; RunOptions hides them from its errors too)."""
    from pydantic import ValidationError

    from lookout.kafka.errors import KafkaConfigError

    if not isinstance(error, ValidationError):
        return [CheckResult("kafka" if isinstance(error, KafkaConfigError) else "options", False, clean(error))]
    out: list[CheckResult] = []
    for err in error.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in err["loc"])
        cause = (err.get("ctx") or {}).get("error")
        msg = str(cause) if isinstance(cause, Exception) else err["msg"]  # a validator's own message, unprefixed
        if field == "kafka_config":
            out.append(CheckResult("kafka config", False, clean(msg)))
        else:
            out.append(CheckResult("options", False, clean(f"{field}: {msg}" if field else msg)))
    return out


def check_run(
    run_options: dict[str, Any], rules_path: str | None, lateness: str | None, timeout: float, dry_run: bool = False
) -> list[CheckResult]:
    """The checks for `lookout run` with these options (`RunOptions` fields, as the command line
    gives them): options `run` would refuse become result lines, the rest is `run_checks`."""
    from lookout.runner import RunOptions

    try:
        ro = RunOptions(**run_options, view=False)
        kafka = ro.kafka_connection if ro.kafka else None
    except ValueError as e:  # a pydantic ValidationError, or a Kafka connection that cannot be built
        return option_results(e)
    co = CheckOptions(
        rules_path=rules_path,
        lateness=lateness,
        kafka=kafka,
        topic=ro.topic,
        partitions=ro.partitions,
        es_url=ro.es_url,
        tail_path=str(ro.tail_path) if ro.tail_path else None,
        state_dir=str(ro.state_dir),
        out_dir=str(ro.out_dir),
        timeout=timeout,
    )
    return run_checks(co, dry_run=dry_run)


def run_checks(opts: CheckOptions, dry_run: bool = False) -> list[CheckResult]:
    """Every check that applies to `opts`, in a fixed order (rules, options, paths, services)."""
    results: list[CheckResult] = []
    rs = _check_rules(opts, results)
    if opts.kafka is not None and opts.kafka.properties:
        shown = ", ".join(f"{k}={v}" for k, v in opts.kafka.redacted().items())
        results.append(CheckResult("kafka config", True, clean(shown)))
    secrets = opts.kafka.secret_values() if opts.kafka is not None else []
    secrets += [os.environ.get(k, "") for k in ("LOOKOUT_ES_PASSWORD", "LOOKOUT_ES_API_KEY")]
    if opts.es_url and "@" in opts.es_url.split("//", 1)[-1].split("/", 1)[0]:
        secrets.append(opts.es_url.split("//", 1)[-1].split("@", 1)[0].partition(":")[2])
    if dry_run:
        results.append(CheckResult("paths", True, "not checked (--dry-run)"))
        for name, given in (("kafka", opts.kafka is not None), ("elasticsearch", opts.es_url)):
            if given:
                results.append(CheckResult(name, True, "not contacted (--dry-run)"))
        return [CheckResult(r.name, r.ok, _redact(r.detail, secrets), r.warn) for r in results]
    results += check_dir("state dir", Path(opts.state_dir), state=True)
    results += check_dir("output dir", Path(opts.out_dir))
    if opts.tail_path:
        results.append(check_tail(Path(opts.tail_path)))
    jobs: list[tuple[str, Callable[[], list[CheckResult]]]] = []
    kafka = opts.kafka
    if kafka is not None:
        jobs.append(("kafka", lambda: check_kafka(kafka, opts.topic, opts.partitions, rs, opts.timeout)))
    if opts.es_url:
        jobs.append(("elasticsearch", lambda: check_elasticsearch(opts.es_url or "", rs, opts.timeout)))
    if jobs:
        results += _run_bounded(jobs, opts.timeout * 2 + 1)
    return [CheckResult(r.name, r.ok, _redact(r.detail, secrets), r.warn) for r in results]


def _run_bounded(jobs: list[tuple[str, Callable[[], list[CheckResult]]]], limit: float) -> list[CheckResult]:
    """Run the service checks side by side in daemon threads: one that hangs past `limit` becomes
    a ✘ result, and cannot keep the process from exiting (a thread pool's workers would)."""
    answers: dict[str, list[CheckResult]] = {}

    def work(name: str, fn: Callable[[], list[CheckResult]]) -> None:
        try:
            answers[name] = fn()
        except Exception as e:  # noqa: BLE001 - a check never ends in a traceback
            answers[name] = [CheckResult(name, False, f"check failed: {type(e).__name__}: {clean(e)}")]

    threads = [threading.Thread(target=work, args=job, name=f"lookout-check-{job[0]}", daemon=True) for job in jobs]
    for t in threads:
        t.start()
    deadline = time.monotonic() + limit
    out: list[CheckResult] = []
    for (name, _), t in zip(jobs, threads, strict=False):
        t.join(max(0.0, deadline - time.monotonic()))
        out += answers.get(name) or [CheckResult(name, False, f"no answer within {limit:.0f} s (the service hangs)")]
    return out


# ------------------------------------------------------------------------- rules, options


def _check_rules(opts: CheckOptions, out: list[CheckResult]) -> RuleSet | None:
    try:
        rs = load_rules(opts.rules_path)
        if opts.lateness is not None:
            rs = rs.with_lateness(parse_duration(opts.lateness))
    except (RulesError, ValueError, OSError) as e:
        out.append(CheckResult("rules", False, clean(e)))
        return None
    names = ", ".join(r.name for r in rs.rules)
    where = opts.rules_path or "the built-in defaults"
    out.append(CheckResult("rules", True, f"{len(rs.rules)} rule(s) from {where}: {names}"))
    return rs


# ------------------------------------------------------------------------- files


def _locks_held(paths: list[Path]) -> dict[Path, str]:
    """Which of `paths` another process holds a lock on, from /proc/locks (read only: taking
    the lock to test it could make a `run` starting at that moment fail)."""
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return {}
    by_inode: dict[tuple[int, int, int], Path] = {}
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        by_inode[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = p
    held: dict[Path, str] = {}
    for line in table.splitlines():
        f = line.split()
        if len(f) < 6 or f[1] == "->":
            continue
        try:
            pid = int(f[4])
            maj, mnr, ino = f[5].split(":")
            key = (int(maj, 16), int(mnr, 16), int(ino))
        except ValueError:
            continue
        if key in by_inode:
            who = f"PID {pid}{_process_name(pid)}" if pid > 0 else "a process /proc/locks does not name (OFD lock)"
            held[by_inode[key]] = f"{f[1].lower()} lock held by {who}"
    return held


def _process_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    words = [w.decode(errors="replace") for w in cmd if w][:3]
    return f" ({clean(' '.join(Path(words[0]).name if i == 0 else w for i, w in enumerate(words)))})" if words else ""


def _age(mtime: float) -> str:
    s = max(0.0, time.time() - mtime)
    when = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    ago = f"{s:.0f} s" if s < 120 else (f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h")
    return f"{when}, {ago} ago"


def check_dir(name: str, path: Path, state: bool = False) -> list[CheckResult]:
    """Can `run` create and write files here? For the state dir, also: whose checkpoint and
    positions are in it, and whether another process holds a lock on it."""
    target = path
    while not target.exists():
        if target.parent == target:
            break
        target = target.parent
    if target.exists() and not target.is_dir():
        why = "is a regular file" if target == path else f"cannot be created: {target} is a regular file"
        return [CheckResult(name, False, f"{path} {why}")]
    try:
        fd, probe = tempfile.mkstemp(prefix=".lookout-check-", dir=target)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        return [CheckResult(name, False, f"{path} is not writable ({e.strerror or e})")]
    if target != path:
        return [CheckResult(name, True, f"{path} does not exist yet; will be created under {target} (writable)")]
    out = [CheckResult(name, True, f"{path} is writable")]
    if state:
        out += _state_contents(name, path)
    return out


def _state_contents(name: str, path: Path) -> list[CheckResult]:
    entries = sorted(path.iterdir())
    held = _locks_held([path, *entries])
    out: list[CheckResult] = []
    found = []
    ck = path / CHECKPOINT_DIR
    if ck.is_dir():
        files = [p for p in ck.iterdir() if p.is_file()]
        if files:
            size = sum(p.stat().st_size for p in files)
            newest = max(p.stat().st_mtime for p in files)
            found.append(f"checkpoint ({len(files)} files, {size:,} bytes, written {_age(newest)})")
    legacy = path / LEGACY_PICKLE
    if legacy.is_file():
        out.append(
            CheckResult(
                name,
                False,
                f"{legacy} is an old pickle checkpoint: lookout never loads it (move it away to start this state dir afresh)",
            )
        )
    pos = path / "tail-position.json"
    if pos.is_file():
        try:
            import orjson

            data = orjson.loads(pos.read_bytes())
            found.append(f"tail position of {clean(data.get('path', '?'))}" if isinstance(data, dict) else "tail position")
        except (OSError, ValueError):
            found.append("tail-position.json (unreadable)")
    if (path / "store").is_dir():
        found.append(f"embedded store ({sum(1 for _ in (path / 'store').rglob('*.parquet'))} parquet files)")
    out.append(CheckResult(name, True, "contents: " + ("; ".join(found) if found else "empty (a fresh start)")))
    for p, who in held.items():
        out.append(CheckResult(name, False, f"{p} is in use: {who}; a second run on this state dir cannot start"))
    return out


def check_tail(path: Path) -> CheckResult:
    if path.is_dir():
        return CheckResult("tail", False, f"{path} is a directory")
    if path.exists():
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as e:
            return CheckResult("tail", False, f"{path} is not readable ({e.strerror or e})")
        return CheckResult("tail", True, f"{path} readable ({path.stat().st_size:,} bytes)")
    if not path.parent.is_dir():
        return CheckResult("tail", False, f"{path} does not exist and neither does its folder {path.parent}")
    return CheckResult("tail", True, f"{path} does not exist yet; run waits for it to appear", warn=True)


# ------------------------------------------------------------------------- Kafka

API_NAMES = {
    0: "Produce",
    1: "Fetch",
    2: "ListOffsets",
    3: "Metadata",
    8: "OffsetCommit",
    9: "OffsetFetch",
    10: "FindCoordinator",
    11: "JoinGroup",
    12: "Heartbeat",
    13: "LeaveGroup",
    14: "SyncGroup",
    18: "ApiVersions",
    19: "CreateTopics",
    22: "InitProducerId",
}
NEEDED_APIS = (0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 19, 22)  # consumer groups, idempotent producer, topic creation


def kafka_api_versions(host: str, port: int, props: Mapping[str, str], timeout: float) -> dict[int, tuple[int, int]]:
    """ApiVersions (v0) straight on the wire: librdkafka negotiates these but does not expose
    them. Sent before any SASL exchange, as every client does; over TLS when the protocol says so."""
    sock = socket.create_connection((host, port), timeout)
    try:
        if props.get("security.protocol", "PLAINTEXT").upper() in ("SSL", "SASL_SSL"):
            ctx = ssl.create_default_context(cafile=props.get("ssl.ca.location") or None)
            if props.get("enable.ssl.certificate.verification", "true").lower() == "false":
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=host)
        client = b"lookout-check"
        body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
        sock.sendall(struct.pack(">i", len(body)) + body)

        def read(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = sock.recv(n - len(buf))
                if not chunk:
                    raise ConnectionError("the broker closed the connection")
                buf += chunk
            return buf

        (size,) = struct.unpack(">i", read(4))
        data = read(size)
        _corr, err, count = struct.unpack(">ihi", data[:10])
        if err != 0:
            raise ConnectionError(f"ApiVersions error code {err}")
        return {k: (lo, hi) for k, lo, hi in (struct.unpack(">hhh", data[10 + 6 * i : 16 + 6 * i]) for i in range(count))}
    finally:
        sock.close()


def check_kafka(conn: KafkaConnection, topic: str, partitions: int, rs: RuleSet | None, timeout: float) -> list[CheckResult]:
    """Reach the brokers with `run`'s own librdkafka settings, then describe what `run` would find."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from lookout.kafka.lock import LOCK_TOPIC, InstanceLock
    from lookout.sources.kafka import KafkaSource

    bootstrap, props = conn.bootstrap, conn.properties
    errors: list[str] = []
    ms = str(int(timeout * 1000))
    conf = conn.client_config(**{"socket.timeout.ms": ms, "socket.connection.setup.timeout.ms": ms})
    conf["error_cb"] = lambda err: errors.append(err.str())  # reported in the result, not logged by the connection's health
    try:
        admin = AdminClient(conf)
    except (KafkaException, ValueError, TypeError) as e:
        return [CheckResult("kafka", False, f"librdkafka refused the configuration: {clean(e)}")]
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as e:
        admin.poll(0)  # serve the error callbacks: they hold the reason (Connection refused, ...)
        reason = errors[-1] if errors else str(e.args[0].str() if e.args else e)
        return [CheckResult("kafka", False, f"cannot reach {bootstrap} within {timeout:g} s: {clean(reason)}")]
    out: list[CheckResult] = []
    brokers = sorted(md.brokers.values(), key=lambda b: b.id)
    head = f"{bootstrap}: {len(brokers)} broker(s), cluster {clean(md.cluster_id)}, controller {md.controller_id}"
    try:
        first = brokers[0] if brokers else None
        host, port = (first.host, first.port) if first else (bootstrap.split(",")[0].rsplit(":", 1)[0], 9092)
        apis = kafka_api_versions(host, int(port), props, timeout)
    except (OSError, ConnectionError, struct.error, ssl.SSLError) as e:
        out.append(CheckResult("kafka", True, f"{head}; API versions not read ({clean(e)})", warn=True))
    else:
        missing = [API_NAMES[k] for k in NEEDED_APIS if k not in apis]
        shown = ", ".join(f"{API_NAMES[k]} v{apis[k][0]}-{apis[k][1]}" for k in (0, 1, 3, 19, 22) if k in apis)
        detail = f"{head}; {len(apis)} APIs ({shown})"
        if missing:
            out.append(CheckResult("kafka", False, f"{detail}; missing APIs lookout needs: {', '.join(missing)}"))
        else:
            out.append(CheckResult("kafka", True, detail))
    existing = {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}
    wanted = [topic, f"{topic}-dlq", LOCK_TOPIC] + ([r.name for r in rs.rules] if rs is not None else [])
    have = [f"{t} ({existing[t]} partitions)" for t in wanted if t in existing]
    make = [t for t in wanted if t not in existing]
    text = ("exist: " + ", ".join(have)) if have else "none exist yet"
    if make:
        text += f"; will be created by run: {', '.join(make)} ({partitions} partitions, lock topic 1)"
    out.append(CheckResult("kafka topics", True, text))
    out.append(_kafka_permissions(admin, existing, wanted, make, timeout))
    # the lock group run's source would join (its rule for the group, not a copy; nothing connects here)
    source = KafkaSource(conn, topic, partitions=partitions)
    out.append(_kafka_lock(admin, InstanceLock(source.conn, source.group, topic).group, timeout))
    return out


def _kafka_permissions(admin: Any, existing: dict[str, int], wanted: list[str], make: list[str], timeout: float) -> CheckResult:
    """What the broker says these credentials may do (KIP-430 authorized operations)."""
    from confluent_kafka import KafkaException, TopicCollection

    problems = []
    try:
        cluster = admin.describe_cluster(include_authorized_operations=True, request_timeout=timeout).result(timeout)
        present = [t for t in wanted if t in existing]
        topic_ops = {}
        if present:
            fs = admin.describe_topics(TopicCollection(present), include_authorized_operations=True, request_timeout=timeout)
            topic_ops = {name: f.result(timeout).authorized_operations for name, f in fs.items()}
    except (KafkaException, FutureTimeout, ValueError) as e:
        return CheckResult("kafka access", True, f"permissions not read ({clean(e)})", warn=True)
    if cluster.authorized_operations is None and not any(v is not None for v in topic_ops.values()):
        return CheckResult(
            "kafka access",
            True,
            "the broker reports no authorized operations (no authorizer, or no KIP-430 support): write access not verified",
            warn=True,
        )
    if make and cluster.authorized_operations is not None:
        if not {o.name for o in cluster.authorized_operations} & {"CREATE", "ALL"}:
            problems.append("may not create topics (" + ", ".join(make) + ")")
    for name, ops in topic_ops.items():
        names = {o.name for o in ops or []}
        if ops is not None and not names & {"WRITE", "ALL"}:
            problems.append(f"may not write {name}")
    if problems:
        return CheckResult("kafka access", False, "; ".join(problems))
    return CheckResult("kafka access", True, "credentials may create the missing topics and write the existing ones")


def _kafka_lock(admin: Any, lock_group: str, timeout: float) -> CheckResult:
    from confluent_kafka import KafkaException

    try:
        desc = admin.describe_consumer_groups([lock_group], request_timeout=timeout)[lock_group].result(timeout)
    except (KafkaException, FutureTimeout) as e:
        return CheckResult("kafka lock", True, f"group {lock_group} not described ({clean(e)})", warn=True)
    state = desc.state.name  # a ConsumerGroupState
    if desc.members:
        who = f"{len(desc.members)} member(s): " + ", ".join(f"{clean(m.client_id)} on {clean(m.host)}" for m in desc.members)
    elif state in ("STABLE", "PREPARING_REBALANCE", "COMPLETING_REBALANCE"):
        who = "members not listed by the broker"  # Tansu answers the state without the member list
    else:
        return CheckResult("kafka lock", True, f"input lock free (group {lock_group} is {state.lower()})")
    return CheckResult(
        "kafka lock",
        True,
        f"group {lock_group} is {state.lower()} ({who}): another lookout run is active; this one would stand by until it stops",
        warn=True,
    )


# ------------------------------------------------------------------------- Elasticsearch


def check_elasticsearch(url: str, rs: RuleSet | None, timeout: float) -> list[CheckResult]:
    from lookout.sinks.es_http import ElasticsearchError, EsClient, EsConfig
    from lookout.sinks.es_mapping import index_name

    try:
        cfg = EsConfig.from_url(url, timeout=timeout)
        client = EsClient(cfg)
    except ElasticsearchError as e:
        return [CheckResult("elasticsearch", False, clean(e.message))]
    except ValueError as e:  # a malformed URL or number in LOOKOUT_ES_*
        return [CheckResult("elasticsearch", False, clean(e))]

    def get(method: str, path: str, body: Any = None) -> Any:
        return client.request(method, path, body)

    try:
        r = get("GET", "/")
    except client.transport_errors as e:
        return [CheckResult("elasticsearch", False, f"cannot connect to {cfg.url} within {timeout:g} s: {_transport_reason(e)}")]
    if r.status in (401, 403):
        how = "API key" if cfg.api_key else ("user " + clean(cfg.username) if cfg.username else "no credentials")
        return [
            CheckResult(
                "elasticsearch", False, f"{cfg.url}: HTTP {r.status}, credentials refused ({how}): {clean(r.error_reason())}"
            )
        ]
    if r.status != 200 or not isinstance(r.data, dict):
        return [CheckResult("elasticsearch", False, f"{cfg.url}: HTTP {r.status} to GET /: {clean(r.error_reason())}")]
    ver = r.data.get("version") or {}
    dist, number = ver.get("distribution") or "elasticsearch", str(ver.get("number") or "?")
    head = f"{cfg.url}: {clean(dist)} {clean(number)}, cluster {clean(r.data.get('cluster_name', '?'))}"
    out: list[CheckResult] = []
    major_minor = tuple(int(x) for x in re.findall(r"\d+", number)[:2]) or (0, 0)
    if dist == "elasticsearch" and major_minor < (7, 8):
        out.append(
            CheckResult("elasticsearch", False, f"{head}: lookout needs Elasticsearch >= 7.8 (composable index templates)")
        )
    else:
        out.append(CheckResult("elasticsearch", True, head))
    try:
        index = index_name(cfg.index)
        templates = [f"lookout-{index}"]
        if cfg.results and rs is not None:
            templates += [f"lookout-results-{index_name(cfg.results_prefix + rule.name)}" for rule in rs.rules]
        there = [t for t in templates if get("GET", f"/_index_template/{t}").status == 200]
        todo = [t for t in templates if t not in there]
        c = get("GET", f"/{index}/_count")
        idx = (
            f"index {index} has {c.data.get('count', '?')} documents"
            if c.status == 200 and isinstance(c.data, dict)
            else f"index {index} will be created by the first bulk"
        )
        text = (
            ("templates exist: " + ", ".join(there) if there else "no lookout template yet")
            + (f"; will be put by run: {', '.join(todo)}" if todo else "")
            + f"; {idx}"
        )
        out.append(CheckResult("elasticsearch templates", True, text))
        out.append(_es_write_access(get, index, templates))
    except client.transport_errors as e:
        out.append(CheckResult("elasticsearch", False, f"{cfg.url} stopped answering: {_transport_reason(e)}"))
    return out


def _transport_reason(e: BaseException) -> str:
    """urllib3 wraps the cause several levels deep; the innermost says it (Connection refused, timed out)."""
    from urllib3.exceptions import MaxRetryError

    text = str(e.reason if isinstance(e, MaxRetryError) and e.reason is not None else e)
    m = re.search(r"\[Errno -?\d+\] ([^')\]]+)", text)
    if m:
        return m.group(1)
    if "timed out" in text.lower():
        return "timed out"
    return clean(text.split(": ", 1)[-1] if ": " in text else text)


def _es_write_access(get: Callable[..., Any], index: str, templates: list[str]) -> CheckResult:
    """Elasticsearch with security answers `_has_privileges`; other servers (OpenSearch,
    security off) get a real write that leaves nothing behind: a throw-away template, deleted."""
    auth = get("GET", "/_security/_authenticate")
    if auth.status == 200 and isinstance(auth.data, dict):
        body = {
            "cluster": ["manage_index_templates"],
            "index": [{"names": [index], "privileges": ["create_index", "index", "view_index_metadata"]}],
        }
        r = get("POST", "/_security/user/_has_privileges", body)
        if r.status == 200 and isinstance(r.data, dict):
            user = clean(auth.data.get("username", "?"))
            if r.data.get("has_all_requested"):
                return CheckResult("elasticsearch access", True, f"user {user} may put templates and write {index}")
            lacking = [p for p, ok in (r.data.get("cluster") or {}).items() if not ok]
            for name, privs in (r.data.get("index") or {}).items():
                lacking += [f"{p} on {name}" for p, ok in privs.items() if not ok]
            return CheckResult("elasticsearch access", False, f"user {user} lacks: {', '.join(map(clean, lacking))}")
    probe = f"lookout-check-probe-{uuid.uuid4().hex[:12]}"
    r = get(
        "PUT",
        f"/_index_template/{probe}",
        {"index_patterns": [f"{probe}-never-matches"], "priority": 1, "_meta": {"managed_by": "lookout check (deleted at once)"}},
    )
    if r.status >= 300:
        return CheckResult(
            "elasticsearch access", False, f"cannot put an index template: HTTP {r.status} {clean(r.error_reason())}"
        )
    d = get("DELETE", f"/_index_template/{probe}")
    if d.status >= 300:
        return CheckResult(
            "elasticsearch access",
            True,
            f"templates writable, but probe template {probe} could not be deleted (HTTP {d.status})",
            warn=True,
        )
    return CheckResult(
        "elasticsearch access",
        True,
        "index templates writable (probe put and deleted); document writes are not checked on this server (no _has_privileges)",
    )
