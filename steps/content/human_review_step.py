"""Flagged content leaves the system here: a human review queue (a moderation tool, a ticket)."""

config = {
    "name": "HumanReview",
    "type": "noop",
    "subscribes": ["content.flagged"],
    "flows": ["content"],
    "description": "Flagged content goes to people for review, outside Stepwise.",
}
