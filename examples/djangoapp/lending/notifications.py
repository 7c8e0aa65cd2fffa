"""An outbox standing in for e-mail: messages are queued only once the transaction that caused them commits."""

from django.db import transaction

outbox: list[dict] = []


def notify_after_commit(kind: str, **data) -> None:
    transaction.on_commit(lambda: outbox.append({"kind": kind, **data}))
