"""Request bodies per target type, built from an incident line (`Transition.doc`).

- webhook: the incident line itself;
- alertmanager: Alertmanager's /api/v2/alerts body (labels alertname = rule + the key fields,
  annotations with the window and peak, startsAt, and endsAt once resolved or merged);
- slack: an incoming-webhook message a person can read at a glance. Record values are escaped
  for Slack's mrkdwn (&, <, >), so a hostile host name cannot inject a link or a mention.
"""

from __future__ import annotations

from typing import Any

import orjson

from lookout.rules import Rule, format_duration


def _slack_escape(v: Any) -> str:
    return str(v).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def webhook(doc: dict[str, Any], rule: Rule | None) -> bytes:
    return orjson.dumps(doc)


def alertmanager(doc: dict[str, Any], rule: Rule | None) -> bytes:
    labels = {"alertname": doc["rule"], **{k: str(v) for k, v in doc["key"].items()}}
    ann = {
        "summary": summary(doc, rule),
        "window": f"{doc['start']} – {doc['end']}",
        "peak": _num(doc["peak"]),
        "windows": str(doc["windows"]),
        "incident_id": doc["id"],
    }
    if "merged_into" in doc:
        ann["merged_into"] = doc["merged_into"]
    alert: dict[str, Any] = {"labels": labels, "annotations": ann, "startsAt": doc["start"]}
    if doc["status"] != "firing":
        alert["endsAt"] = doc["end"]
    return orjson.dumps([alert])


def summary(doc: dict[str, Any], rule: Rule | None) -> str:
    """`203.0.113.7 sent 57 requests in 20s (limit 10), since 06:51:32 UTC`"""
    who = ", ".join(str(v) for v in doc["key"].values())
    since = doc["start"][11:19]
    if rule is None:
        return f"{doc['rule']}: {who} peak {_num(doc['peak'])}, since {since} UTC"
    size = format_duration(rule.window.size)
    t = rule.threshold_spec
    limit = _num(t.value if t is not None and not float(t.value).is_integer() else int(t.value)) if t else "?"
    if rule.agg.func == "count":
        what = f"sent {_num(doc['peak'])} requests in {size} (limit {limit})"
    else:
        what = f"{rule.agg.output_name} {_num(doc['peak'])} over {size} ({t})"
    return f"{who} {what}, since {since} UTC"


def slack(doc: dict[str, Any], rule: Rule | None) -> bytes:
    text = _slack_escape(summary(doc, rule))
    if doc["status"] == "resolved":
        text = f"Resolved: {text} until {doc['end'][11:19]} UTC ({doc['windows']} windows)"
    elif doc["status"] == "merged":
        text = f"Merged into incident {doc['merged_into']}: {text}"
    else:
        text = f":rotating_light: {_slack_escape(doc['rule'])}: {text}"
    return orjson.dumps({"text": text})


FORMATS = {"webhook": webhook, "alertmanager": alertmanager, "slack": slack}
