"""Raw records (goal 5) and, optionally, rule results into Elasticsearch / OpenSearch.

Guarantees, and how:
- typed fields: an index template (sinks/es_mapping.py) is put before the first document;
- no duplicates: every document's `_id` is the record id the source gives (file + line, Kafka
  topic-partition-offset, generator sequence), so a replay, a retry or a restart overwrites;
- no loss: `flush()` returns only once every bulk item given so far is acknowledged; 429, 5xx,
  timeouts and connection errors are retried with exponential backoff and jitter, for as long as
  it takes (or up to LOOKOUT_ES_MAX_RETRY_TIME, then the process stops without committing);
  items refused inside a 200 bulk with 429/5xx are retried alone;
- every drop explained: an item refused for good (a mapping error, 400) becomes a dead letter
  with the server's reason (`elasticsearch-rejected`), counted in `stats`;
- bounded memory: at most 2 x concurrency bulks wait or fly; writers block beyond that, so
  `lookout run` stops reading while the server is down or frozen.
HTTP: see sinks/es_http.py for why this is not the official client.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from lookout.output import dead_letter, iso_ms
from lookout.schema import VALUE_COLUMNS
from lookout.sinks.base import Sink
from lookout.sinks.es_http import Backoff, ElasticsearchError, EsClient, EsConfig, Outage, call, error_reason
from lookout.sinks.es_mapping import (
    RECORD_TYPES,
    index_name,
    mapping_conflicts,
    missing_fields,
    record_properties,
    records_template,
    results_template,
)

if TYPE_CHECKING:
    from lookout.incidents import Transition
    from lookout.output import ResultBatch
    from lookout.rules import RuleSet
    from lookout.store import Query

log = logging.getLogger("lookout.elasticsearch")

REJECT_REASON = "elasticsearch-rejected"
MAX_ID_BYTES = 512  # Elasticsearch's limit on _id
NDJSON = "application/x-ndjson"
_ID_RE = re.compile(r"^(?P<source>.+):(?P<line>\d+)$")
QUIET_RECHECK = 5.0  # s without an acknowledged bulk after which the server is checked before the next
KEEP_ACKED_BYTES = 16 << 20  # acknowledged documents kept until the next flush, to re-send if the server loses them


def doc_id(record_id: str) -> str:
    """The document _id: the record id itself, or a hash of it when longer than ES allows."""
    if len(record_id.encode()) <= MAX_ID_BYTES:
        return record_id
    return "h-" + hashlib.blake2b(record_id.encode(), digest_size=20).hexdigest()


def _action(index: str, _id: str) -> str:
    return '{"index":{"_index":' + orjson.dumps(index).decode() + ',"_id":' + orjson.dumps(_id).decode() + "}}\n"


class ElasticsearchSink(Sink):
    name = "elasticsearch"

    def __init__(
        self, cfg: EsConfig, rules: RuleSet | None = None, on_rejected: Callable[[list[bytes]], None] | None = None
    ) -> None:
        self.cfg = cfg
        self.client = EsClient(cfg)
        self.outage = Outage(cfg.url)
        self.backoff = Backoff()
        self.on_rejected = on_rejected
        self.index = index_name(cfg.index)
        self.stats = {"indexed": 0, "rejected": 0, "retried_items": 0, "bulks": 0, "lost": 0, "resent": 0}
        self.cluster_uuid: str | None = None
        self._templates: dict[str, dict[str, Any]] = {}  # what _setup put, to put back if the server loses it
        self._check_lock = threading.Lock()
        self._checked_at = time.monotonic()  # last acknowledged bulk or check of what the server holds
        self._index_seen = False  # the records index held documents of ours (so its absence is a loss)
        self._indexed_at_loss = 0
        # acknowledged since the last flush() returned (the caller checkpoints after it): what a
        # server that lost its data lacks and lookout can still send, up to KEEP_ACKED_BYTES
        self._acked: list[str] = []
        self._acked_bytes = 0
        self._acked_complete = True
        self._resend: list[str] = []  # taken from _acked on a loss; sent by the next flush
        self._lock = threading.Lock()
        self._dead: list[bytes] = []
        self._buf: list[str] = []
        self._buf_bytes = 0
        self._futures: set[Future] = set()
        self._slots = threading.BoundedSemaphore(2 * cfg.concurrency)
        self._pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="lookout-es")
        self._written: set[str] = set()  # index names (for the refresh at close)
        self._results: dict[str, str] = {}  # rule -> index
        self._incidents: list[str] = []  # sent in order at flush: a later status overwrites an earlier one
        self._closed = False
        self._stop = threading.Event()  # set: workers stop retrying (fatal error elsewhere, or abort())
        self._setup(rules)

    @classmethod
    def from_url(
        cls, url: str, rules: RuleSet | None = None, on_rejected: Callable[[list[bytes]], None] | None = None, **options: Any
    ) -> ElasticsearchSink:
        """URL (user:password@ allowed) + the LOOKOUT_ES_* environment (the --es-* options of
        replay and run set it) + keyword overrides of EsConfig fields."""
        return cls(EsConfig.from_url(url, **options), rules=rules, on_rejected=on_rejected)

    # ------------------------------------------------------------------ start-up

    def _call(self, method: str, path: str, body: Any = None, what: str = "", **kw: Any) -> Any:
        return call(
            self.client,
            method,
            path,
            body,
            what=what or f"{method} {path}",
            outage=self.outage,
            max_retry_time=self.cfg.max_retry_time,
            backoff=self.backoff,
            stop=self._stop,
            **kw,
        )

    def _setup(self, rules: RuleSet | None) -> None:
        """Say what we talk to, and put the templates in place (retrying while the server is away)."""
        r = self._call("GET", "/", what="connect")
        if r.status in (401, 403):
            raise ElasticsearchError(f"{self.cfg.url}: {r.status} {r.error_reason()} (check credentials)")
        ver = (r.data or {}).get("version", {}) if isinstance(r.data, dict) else {}
        self.cluster_uuid = r.data.get("cluster_uuid") if isinstance(r.data, dict) else None
        log.info(
            "elasticsearch: %s %s at %s, raw records into %s%s",
            ver.get("distribution", "elasticsearch"),
            ver.get("number", "?"),
            self.cfg.url,
            self.index,
            " (daily indices)" if self.cfg.daily else "",
        )
        self._put_template(f"lookout-{self.index}", records_template(self.index, self.cfg.daily))
        if not self.cfg.daily:
            self._check_existing(self.index, RECORD_TYPES)
        if self.cfg.results and rules is not None:
            for rule in rules.rules:
                idx = index_name(self.cfg.results_prefix + rule.name)
                agg = rule.agg
                is_count = agg.func == "count"
                self._put_template(
                    f"lookout-results-{idx}", results_template(idx, list(rule.group_by), agg.output_name, is_count)
                )
                self._results[rule.name] = idx

    def _put_template(self, name: str, body: dict[str, Any]) -> None:
        r = self._call("PUT", f"/_index_template/{name}", body, what=f"put index template {name}")
        if r.status >= 300:
            raise ElasticsearchError(f"index template {name}: HTTP {r.status} {r.error_reason()}")
        self._templates[name] = body

    def _check_existing(self, index: str, types: dict[str, str]) -> None:
        """An index made before the template keeps its own types: say so loudly."""
        r = self._call("GET", f"/{index}/_mapping", what=f"read mapping of {index}")
        if r.status != 200 or not isinstance(r.data, dict):
            return
        for name, m in r.data.items():
            missing = missing_fields(m.get("mappings", {}), types)
            if missing:  # made by an older lookout, before these fields: adding a field to a mapping is allowed
                body = {"properties": {f: p for f, p in record_properties(types).items() if f in missing}}
                put = self._call("PUT", f"/{name}/_mapping", body, what=f"add {', '.join(missing)} to the mapping of {name}")
                if put.status >= 300:
                    log.warning("elasticsearch: could not add %s to index %s: HTTP %s", ", ".join(missing), name, put.status)
            bad = mapping_conflicts(m.get("mappings", {}), types)
            if bad:
                log.warning(
                    "elasticsearch: index %s already exists with other types (%s); documents that do not "
                    "fit will be dead-lettered - delete or reindex it to get lookout's mapping",
                    name,
                    "; ".join(bad),
                )

    # ------------------------------------------------------------------ writing

    def _record_items(self, records: pl.DataFrame, ids: pl.Series) -> list[str]:
        """One `action\\ndocument\\n` string per record, built column-wise by polars."""
        ts = pl.from_epoch("ts", time_unit="us")
        doc = pl.struct(
            ts.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").alias("@timestamp"),
            *VALUE_COLUMNS,
        ).struct.json_encode()
        if self.cfg.daily:
            idx = pl.lit(self.index + "-") + ts.dt.strftime("%Y.%m.%d")
        else:
            idx = pl.lit(self.index)
        ids = pl.Series("id", ids, dtype=pl.String)
        if (ids.str.len_bytes().max() or 0) > MAX_ID_BYTES // 4:
            ids = pl.Series("id", [doc_id(i) for i in ids.to_list()], dtype=pl.String)
        frame = records.select(doc=doc, idx=idx).with_columns(id=ids)
        action = pl.struct(pl.struct(_index="idx", _id="id").alias("index")).struct.json_encode()
        items = frame.select(pl.concat_str([action, pl.lit("\n"), pl.col("doc"), pl.lit("\n")])).to_series()
        if self.cfg.daily:
            self._written.update(frame.get_column("idx").unique().to_list())
        else:
            self._written.add(self.index)
        return items.to_list()

    def write_records(self, records: pl.DataFrame, ids: pl.Series) -> None:
        if records.height:
            self._add(self._record_items(records, ids))

    def write_results(self, batch: ResultBatch) -> None:
        idx = self._results.get(batch.rule.name)
        if idx is None or not batch.lines:
            return
        items = []
        for line, rid in zip(batch.lines, batch.ids, strict=False):
            obj = orjson.loads(line)
            obj = {"@timestamp": obj["window"]["start"], **obj}
            items.append(_action(idx, doc_id(rid)) + orjson.dumps(obj).decode() + "\n")
        self._written.add(idx)
        self._add(items)

    def write_incidents(self, transitions: list[Transition]) -> None:
        from lookout.incidents import INCIDENTS_NAME

        for t in transitions:
            doc = {"@timestamp": t.doc["start"], **t.doc}
            self._incidents.append(_action(INCIDENTS_NAME, t.id) + orjson.dumps(doc).decode() + "\n")

    def _flush_incidents(self) -> None:
        """Incident documents go in one ordered bulk after the others (concurrent bulks could land a
        `firing` after the `resolved` of the same _id)."""
        from lookout.incidents import INCIDENTS_NAME

        if self._incidents:
            items, self._incidents = self._incidents, []
            self._send(items)
            self._written.add(INCIDENTS_NAME)

    def _add(self, items: list[str]) -> None:
        for s in items:
            n = len(s)
            if self._buf and (self._buf_bytes + n > self.cfg.bulk_bytes or len(self._buf) >= self.cfg.bulk_docs):
                self._submit()
            self._buf.append(s)
            self._buf_bytes += n
        self._deliver_dead()

    def _submit(self) -> None:
        """Hand the buffer to a worker; blocks while 2 x concurrency bulks are pending (backpressure)."""
        if not self._buf:
            return
        items, self._buf, self._buf_bytes = self._buf, [], 0
        while not self._slots.acquire(timeout=0.2):
            self._raise_failed()
            if self._stop.is_set():
                raise ElasticsearchError("aborted while waiting for the server: nothing unacknowledged was committed")
        fut = self._pool.submit(self._send, items)
        fut.add_done_callback(lambda _f: self._slots.release())
        self._futures.add(fut)
        self._raise_failed()

    def _raise_failed(self) -> None:
        for f in [f for f in self._futures if f.done()]:
            self._futures.discard(f)
            exc = f.exception()
            if exc is not None:
                self._stop.set()  # the other workers give up too, so the process can exit
                raise exc

    def error_count(self) -> int:
        return self.stats["rejected"]

    def abort(self) -> None:
        """Stop waiting for the server (shutdown requested during an outage): pending and
        future flushes raise ElasticsearchError, so nothing unacknowledged gets committed."""
        self._stop.set()

    def flush(self) -> None:
        """Block until everything given so far is acknowledged (or dead-lettered)."""
        self._submit()
        self._drain()
        self._flush_incidents()
        self._drain()  # documents to send again if the server was found empty while the incidents went
        if self._stop.is_set():
            raise ElasticsearchError("aborted: documents may not all be acknowledged; nothing was committed")
        with self._lock:
            self._acked, self._acked_bytes, self._acked_complete = [], 0, True
        self._deliver_dead()

    def _drain(self) -> None:
        """Wait for the submitted bulks, sending again what a server that lost its data had acknowledged."""
        while self._futures or self._resend:
            with self._lock:
                again, self._resend = self._resend, []
            if again:  # documents a server that lost its data acknowledged before: send them again
                self._add(again)
                self._submit()
            # (woken every 0.2 s: after abort() a worker may stay stuck in a read from a frozen server)
            done, _ = wait(self._futures, timeout=0.2, return_when=FIRST_EXCEPTION)
            if not done and self._stop.is_set():
                raise ElasticsearchError("aborted: documents may not all be acknowledged; nothing was committed")
            for f in done:
                self._futures.discard(f)
                exc = f.exception()
                if exc is not None:
                    self._stop.set()
                    self._deliver_dead()
                    raise exc

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
            if self.cfg.refresh_on_close and self._written:
                # make the last documents searchable now (a replay is done; `_count` should say so)
                r = self._call("POST", "/" + ",".join(sorted(self._written)) + "/_refresh", what="refresh")
                if r.status >= 300:
                    log.warning("elasticsearch: refresh failed: HTTP %s %s", r.status, r.error_reason())
        finally:
            self._closed = True
            # after abort() a worker may be stuck in a read from a frozen server: do not wait for it
            self._pool.shutdown(wait=not self._stop.is_set(), cancel_futures=True)
        st = self.stats
        msg = (
            f"elasticsearch: {st['indexed']:,} documents acknowledged by {self.cfg.url} in {st['bulks']:,} bulk "
            f"requests, {st['rejected']:,} rejected (dead-lettered, reason {REJECT_REASON}), "
            f"{st['retried_items']:,} item retries"
        )
        if st["lost"]:
            msg += f"; {st['lost']:,} of the acknowledged documents were lost by the server (restarted empty or deleted)"
        (log.warning if st["rejected"] or st["lost"] else log.info)(msg)

    def delivery(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            return {self.name: (self.stats["indexed"], self.stats["rejected"])}

    def _deliver_dead(self) -> None:
        """Dead letters go out on the caller's thread (the dead-letter file is not thread-safe)."""
        with self._lock:
            dead, self._dead = self._dead, []
        if dead and self.on_rejected is not None:
            self.on_rejected(dead)
        elif dead:
            for d in dead:
                log.error("elasticsearch: rejected document (no dead-letter output): %s", d.decode())

    # ------------------------------------------------------------------ the worker

    def _send(self, items: list[str]) -> None:
        """POST items to /_bulk until each is acknowledged or rejected for good."""
        pending = items
        attempt = 0
        started = time.monotonic()
        while pending:
            body = "".join(pending).encode()
            r = self._call(
                "POST",
                "/_bulk",
                body,
                what=f"bulk of {len(pending)} documents",
                content_type=NDJSON,
                before_send=self._still_ours,
            )
            with self._lock:
                self.stats["bulks"] += 1
            if r.status == 413 and len(pending) > 1:  # larger than http.max_content_length: halve
                half = len(pending) // 2
                self._send(pending[:half])
                self._send(pending[half:])
                return
            if r.status == 413:
                self._reject(pending[0], 413, f"document larger than the server accepts: {r.error_reason()}")
                return
            if r.status >= 300 or not isinstance(r.data, dict) or "items" not in r.data:
                raise ElasticsearchError(f"bulk request refused: HTTP {r.status} {r.error_reason()}")
            answers = r.data["items"]
            if len(answers) != len(pending):
                raise ElasticsearchError(f"bulk answered {len(answers)} items for {len(pending)} sent")
            retry: list[str] = []
            acked: list[str] = []
            for item, ans in zip(pending, answers, strict=False):
                op = next(iter(ans.values())) if isinstance(ans, dict) and ans else {}
                st = int(op.get("status", 0))
                if 200 <= st < 300:
                    acked.append(item)
                elif st == 429 or st >= 500 or st == 0:
                    retry.append(item)
                else:
                    self._reject(item, st, error_reason(op.get("error")), op.get("_index"))
            ok = len(acked)
            with self._lock:
                self.stats["indexed"] += ok
                self.stats["retried_items"] += len(retry)
                if self._acked_complete:
                    self._acked.extend(acked)
                    self._acked_bytes += sum(len(s) for s in acked)
                    if self._acked_bytes > KEEP_ACKED_BYTES:  # too many to keep: these count as lost if lost
                        self._acked, self._acked_bytes, self._acked_complete = [], 0, False
            if ok:
                self._index_seen = True
                self._checked_at = time.monotonic()
            pending = retry
            if retry:
                waited = time.monotonic() - started
                if self.cfg.max_retry_time is not None and waited >= self.cfg.max_retry_time:
                    raise ElasticsearchError(f"{len(retry)} bulk items still refused with 429/5xx after {waited:.0f}s")
                d = self.backoff.delay(attempt)
                self.outage.failed("bulk", f"{len(retry)} of {len(answers)} items refused with 429/5xx", d)
                if self._stop.wait(d):
                    raise ElasticsearchError(f"stopped with {len(retry)} bulk items not acknowledged")
                attempt += 1

    def _still_ours(self) -> str | None:
        """Before a bulk, after any failure or a quiet spell: does the server still hold what
        lookout put there (same cluster uuid, the index templates, the records index)? If it lost
        them (restarted empty, deleted), the templates go back before any document is sent, so no
        index is ever created with dynamic types, and the loss is said loudly and counted.
        Returns None when documents may be sent, else why not yet (the bulk is retried)."""

        def settled() -> bool:
            return (
                not self.outage.suspect.is_set()
                and time.monotonic() - self._checked_at < QUIET_RECHECK
                and not self.client.needs_new_connection()
            )

        if settled():
            return None
        with self._check_lock:
            if settled():
                return None
            r = self.client.request("GET", "/")
            if r.status != 200 or not isinstance(r.data, dict):
                return f"HTTP {r.status} from GET / while checking what the server holds"
            lost = []
            uuid = r.data.get("cluster_uuid")
            if self.cluster_uuid and uuid and uuid != self.cluster_uuid:
                lost.append(f"cluster uuid {self.cluster_uuid} is now {uuid}")
            for name in self._templates:
                t = self.client.request("GET", f"/_index_template/{name}")
                if t.status == 404:
                    lost.append(f"index template {name} is gone")
                elif t.status != 200:
                    return f"HTTP {t.status} reading index template {name}"
            if self._index_seen and not self.cfg.daily:
                i = self.client.request("HEAD", f"/{self.index}")
                if i.status == 404:
                    lost.append(f"index {self.index} is gone")
                elif i.status != 200:
                    return f"HTTP {i.status} checking index {self.index}"
            if lost:
                for name, body in self._templates.items():
                    p = self.client.request("PUT", f"/_index_template/{name}", body)
                    if p.status >= 300:
                        return f"HTTP {p.status} {p.error_reason()} putting index template {name} back"
                with self._lock:
                    resend = self._acked if self._acked_complete else []
                    gone = self.stats["indexed"] - self._indexed_at_loss - len(resend)
                    self._indexed_at_loss = self.stats["indexed"]
                    self.stats["lost"] += gone
                    self.stats["resent"] += len(resend)
                    self._resend.extend(resend)
                    self._acked, self._acked_bytes, self._acked_complete = [], 0, True
                log.error(
                    "elasticsearch at %s lost lookout's data (%s): the %d documents it had acknowledged from this "
                    "run before the last checkpoint are no longer there; the %d acknowledged since are sent again, "
                    "as are those not yet acknowledged. Index templates put back before any document is sent "
                    "again (no dynamically-typed index). To restore the lost ones, replay their input into it "
                    "(`lookout replay FILE --elasticsearch URL`: same ids, no duplicates).",
                    self.cfg.url,
                    "; ".join(lost),
                    gone,
                    len(resend),
                )
                self.cluster_uuid = uuid or self.cluster_uuid
                self._index_seen = False
            self.outage.suspect.clear()
            self._checked_at = time.monotonic()
        return None

    def _reject(self, item: str, status: int, reason: str, index: str | None = None) -> None:
        action, _, rest = item.partition("\n")
        doc = rest.rstrip("\n").encode()
        try:
            meta = orjson.loads(action)["index"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            meta = {}
        _id = str(meta.get("_id", ""))
        m = _ID_RE.match(_id)
        entry = dead_letter(
            REJECT_REASON,
            reason,
            doc,
            m.group("source") if m else None,
            int(m.group("line")) if m else None,
            id=_id,
            index=index or meta.get("_index"),
            status=status,
        )
        with self._lock:
            self._dead.append(entry)
            self.stats["rejected"] += 1


# ---------------------------------------------------------------------- queries (count / search)


def _query_client(url: str) -> tuple[EsClient, EsConfig, Outage]:
    cfg = EsConfig.from_url(url)
    if cfg.max_retry_time is None:
        cfg.max_retry_time = 60.0  # an interactive question should not wait forever
    return EsClient(cfg), cfg, Outage(cfg.url)


def es_count(url: str, index: str) -> int:
    """Documents in `index` (an index, an alias or a pattern): the seed's `_count` check."""
    client, cfg, outage = _query_client(url)
    r = call(client, "GET", f"/{index}/_count", what="count", outage=outage, max_retry_time=cfg.max_retry_time)
    if r.status == 404:
        return 0  # no such index yet: nothing published
    if r.status != 200 or not isinstance(r.data, dict):
        raise ElasticsearchError(f"count {index}: HTTP {r.status} {r.error_reason()}")
    return int(r.data["count"])


def _query_body(q: Query, limit: int) -> dict[str, Any]:
    flt: list[dict[str, Any]] = []
    for f, v in q.terms().items():
        flt.append({"term": {f: v}})
    for f, (lo, hi) in q.ranges().items():
        flt.append({"range": {f: {"gte": lo, "lte": hi}}})
    for f, prefix in q.prefixes().items():
        flt.append({"prefix": {f: prefix}})
    rng: dict[str, Any] = {}
    if q.since_us is not None:
        rng["gte"] = q.since_us // 1000  # documents keep milliseconds
    if q.until_us is not None:
        rng["lt"] = -(-q.until_us // 1000)
    if rng:
        flt.append({"range": {"@timestamp": {**rng, "format": "epoch_millis"}}})
    return {
        "size": limit,
        "sort": [{"@timestamp": {"order": "desc"}}],
        "query": {"bool": {"filter": flt}} if flt else {"match_all": {}},
    }


def _iso(v: Any) -> Any:
    """@timestamp as the embedded store prints it: ISO-8601 UTC with milliseconds."""
    if isinstance(v, (int, float)):
        return iso_ms(int(v) * 1000)
    if isinstance(v, str) and not v.endswith("Z"):
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            return v
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return v


def es_search(url: str, index: str, query: Query, limit: int = 20) -> list[dict[str, Any]]:
    """Raw records matching `query`, newest first, shaped like lookout.store.search's rows."""
    client, cfg, outage = _query_client(url)
    r = call(
        client,
        "POST",
        f"/{index}/_search",
        _query_body(query, limit),
        what="search",
        outage=outage,
        max_retry_time=cfg.max_retry_time,
    )
    if r.status == 404:
        return []
    if r.status != 200 or not isinstance(r.data, dict):
        raise ElasticsearchError(f"search {index}: HTTP {r.status} {r.error_reason()}")
    out = []
    for hit in r.data.get("hits", {}).get("hits", []):
        src = hit.get("_source") or {}
        row = {"@timestamp": _iso(src.get("@timestamp"))}
        for f in VALUE_COLUMNS:
            row[f] = src.get(f)
        row["id"] = hit.get("_id")
        out.append({k: v for k, v in row.items() if v is not None})
    return out
