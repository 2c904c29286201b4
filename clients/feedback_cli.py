"""``recdeploy feedback``: log impressions and clicks, and apply them to the online store.

    recdeploy feedback log --repository repo_next --user 42 --item 1193 --kind click
    recdeploy feedback consume --repository repo_next            # apply what waits, then exit
    recdeploy feedback consume --repository repo_next --follow   # keep applying (Ctrl-C / SIGTERM)
    recdeploy feedback status --repository repo_next             # stream length, pending, store

The repository must have been exported with ``--feature-store redis://HOST:PORT/DB``: its
lookups' store.json names Redis and the key prefix, and the events go to the stream
``<prefix>:events`` beside the store. A logged event is acknowledged once Redis took it; the
next request for that user sees a click as soon as ``consume`` applied it (no reload). What
survives a Redis restart: see docs/online-loop.md (AOF ``appendfsync always``: every
acknowledged event).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recdeploy.clients.feedback import (
    GROUP,
    KINDS,
    ApplyStats,
    Consumer,
    Event,
    FeedbackError,
    FeedbackLog,
    stream_key,
)
from recdeploy.export.feature_store import FeatureStoreError, repository_store


def _log(spec, args) -> int:
    log = FeedbackLog(spec)
    try:
        ids = log.log([Event(user, args.item, args.kind, args.ts) for user in args.user])
    finally:
        log.close()
    print(f"logged {len(ids)} {args.kind} event(s): {', '.join(ids)}")
    return 0


def _consume(spec, args) -> int:
    consumer = Consumer(spec, args.consumer)
    total = ApplyStats()
    try:
        if not args.follow:
            total = consumer.drain()
        else:
            while True:
                total.add(consumer.step(block_ms=1000))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    print(total.summary())
    return 0


def _status(spec, args) -> int:
    client = spec.client()
    try:
        stream = stream_key(spec.prefix)
        length = client.xlen(stream)
        groups = {g["name"].decode(): g for g in client.xinfo_groups(stream)} if length else {}
        group = groups.get(GROUP)
        pending = group["pending"] if group else 0
        lag = group.get("lag") if group else length
        print(f"store {spec.prefix!r} at {spec.url}: stream {stream} holds {length} events; group "
              f"{GROUP!r}: {pending} read but not applied, {lag} not read yet")
    finally:
        client.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recdeploy feedback", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    log = sub.add_parser("log", help="log impressions / clicks into the stream")
    log.add_argument("--user", type=int, action="append", required=True, help="raw user id (repeatable)")
    log.add_argument("--item", type=int, required=True, help="raw item id")
    log.add_argument("--kind", choices=KINDS, default="click")
    log.add_argument("--ts", type=float, default=0.0, help="event time, seconds (default: now)")
    consume = sub.add_parser("consume", help="apply logged clicks to the online store (XREADGROUP / XACK)")
    consume.add_argument("--consumer", default="c1", help="consumer name in the group (default c1)")
    consume.add_argument("--follow", action="store_true", help="keep applying new events until stopped")
    sub.add_parser("status", help="stream length, events pending or not read yet")
    for command in (log, consume, sub.choices["status"]):
        command.add_argument("--repository", type=Path, required=True,
                             help="a repository exported with --feature-store (its store.json)")
    args = parser.parse_args(argv)
    try:
        spec = repository_store(args.repository)
        return {"log": _log, "consume": _consume, "status": _status}[args.action](spec, args)
    except (FeedbackError, FeatureStoreError) as error:
        print(f"recdeploy feedback: {error}", file=sys.stderr)
        return 2
