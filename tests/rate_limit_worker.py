"""One instance hitting a rate-limited route: ``python tests/rate_limit_worker.py CONFIG
MODE REQUESTS START``.

``Authorizer.from_settings`` on CONFIG (its ``[rate_limits] storage`` a shared Redis);
at ``START`` (``time.monotonic``, which every process on the machine shares) it sends
REQUESTS decisions for ``POST /api/widget/tickets/create`` from one client address, all
at once: MODE ``threads`` through ``decide`` on 8 threads, ``async`` through ``adecide``
gathered on one event loop. Prints ``{"status": count}`` as one JSON line.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import sys
import time

from illumichat_authz import Authorizer, RequestFacts, load_settings

REQUEST = RequestFacts(method="POST", path="/api/widget/tickets/create", peer="198.51.100.77")


def main(config: str, mode: str, requests: int, start: float) -> None:
    authorizer = Authorizer.from_settings(load_settings(config, environment=False))
    time.sleep(max(0.0, start - time.monotonic()))
    if mode == "threads":
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: authorizer.decide(REQUEST).status, range(requests)))
    else:

        async def run() -> list[int]:
            try:
                decisions = await asyncio.gather(
                    *(authorizer.adecide(REQUEST) for _ in range(requests))
                )
                return [d.status for d in decisions]
            finally:
                await authorizer.rate_limiter.aclose()

        statuses = asyncio.run(run())
    authorizer.rate_limiter.close()
    print(json.dumps(collections.Counter(statuses)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
