"""Incidents: one line when a (rule, key) starts alerting and one when it stops, instead of one
row per alerting window. See tracker.py for the definition and its guarantees."""

from lookout.incidents.tracker import INCIDENTS_NAME, IncidentTracker, Transition

__all__ = ["INCIDENTS_NAME", "IncidentTracker", "Transition"]
