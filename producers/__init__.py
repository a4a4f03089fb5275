"""Producers of Update Halo Ticket jobs: submit, wait for records, read the completion feed."""

from producers.feed import CompletionFeed, FeedEntry
from producers.jobs import Producer, SubmitError
from producers.waiting import Waited

__all__ = ["CompletionFeed", "FeedEntry", "Producer", "SubmitError", "Waited"]
