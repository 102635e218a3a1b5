"""Notifications of incident transitions: at-least-once, through a durable outbox."""
