"""The naive baseline: one loop per job polling every second, as Segmind's own SDK does.

Run as its own process (so its CPU and peak RSS are its own) by ``python -m bench``::

    python -m bench.baseline --api-url URL --api-key KEY --jobs N --interval 1.0 \
        --image-url URL

For each of N jobs, one asyncio task: submit, then GET the status every ``interval``
seconds until it is COMPLETED (or FAILED), then GET the result once. It uses httpx with
the same connection limits as the bot. At the end it prints one JSON object: jobs
completed, errors, CPU seconds used by the loops and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx

from .measure import proc_sample

MODEL_SLUG = "warmth-of-jesus"


async def one_job(
    http: httpx.AsyncClient, args: argparse.Namespace, errors: list[str]
) -> str | None:
    """Submit one job and poll it every ``interval`` s to its end; its final status."""
    headers = {"x-api-key": args.api_key}
    body = {"image_url": args.image_url, "quality": "540p", "duration": 5}
    deadline = time.monotonic() + args.timeout
    try:
        response = await http.post(f"{args.api_url}/v2/{MODEL_SLUG}", json=body, headers=headers)
        response.raise_for_status()
        submitted: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        errors.append(f"submit: {type(exc).__name__}")
        return None
    status_url = str(submitted["status_url"])
    while time.monotonic() < deadline:
        await asyncio.sleep(args.interval)
        try:
            response = await http.get(status_url, headers=headers)
            status = str(response.json().get("status"))
        except (httpx.HTTPError, ValueError) as exc:
            errors.append(f"status: {type(exc).__name__}")
            continue
        if status in ("COMPLETED", "FAILED"):
            try:
                await http.get(str(submitted["response_url"]), headers=headers)
            except httpx.HTTPError as exc:
                errors.append(f"result: {type(exc).__name__}")
            return status
    errors.append("timeout")
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    connections = args.max_connections or None
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    timeout = httpx.Timeout(30.0, connect=10.0)
    errors: list[str] = []
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as http:
        before = proc_sample()
        started = time.monotonic()
        outcomes = await asyncio.gather(*(one_job(http, args, errors) for _ in range(args.jobs)))
        elapsed = time.monotonic() - started
        after = proc_sample()
    return {
        "jobs": args.jobs,
        "completed": sum(1 for outcome in outcomes if outcome == "COMPLETED"),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "cpu_seconds": after.cpu_seconds - before.cpu_seconds,
        "peak_rss_mb": after.peak_rss_mb,
        "elapsed_seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--image-url", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument(
        "--max-connections", type=int, default=100, help="httpx pool size; 0: no limit"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
