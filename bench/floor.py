"""The floor: the network work of one edit done by a bare aiohttp script, nothing else.

Run as ``python -m bench.floor``; it reads one JSON job per line on stdin and, for each, acknowledges
the interaction (callback type 4), downloads the attachment from the fake CDN, makes the same
multipart request to the fake image API, JSON- and base64-decodes the answer, and PATCHes the bytes to
the interaction's ``@original`` message as ``payload_json`` + ``files[0]``. It prints ``done <id>
<status>`` (or ``error <id> <reason>``) per job and exits at end of input. The benchmark times it at
the fake servers, exactly as it times the bot.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import sys
from typing import Any

import aiohttp

JOB_TIMEOUT = 120.0
_PREFIX_END = b";base64,"


def decode_b64_json(value: str) -> bytes:
    """Decode ``b64_json``, skipping a ``data:image/...;base64,`` prefix."""
    raw = value.encode("ascii")
    cut = raw.find(_PREFIX_END, 0, 100)
    return binascii.a2b_base64(memoryview(raw)[cut + len(_PREFIX_END) if cut >= 0 else 0 :])


async def edit_once(session: aiohttp.ClientSession, job: dict[str, Any]) -> int:
    """Do one job's network work; return the status of the final PATCH."""
    ack = {"type": 4, "data": {"content": "working"}}
    async with session.post(job["callback_url"], json=ack) as response:
        await response.read()
    async with session.get(job["attachment_url"]) as response:
        source = await response.read()
    form = aiohttp.FormData(quote_fields=False)
    form.add_field("model", job["model"])
    form.add_field("prompt", job["prompt"])
    form.add_field("response_format", "b64_json")
    form.add_field("image", source, filename="image1.png", content_type="image/png")
    headers = {"Authorization": f"Bearer {job['api_key']}", "Accept": "application/json"}
    async with session.post(job["api_url"], data=form, headers=headers) as response:
        body = await response.read()
    image = decode_b64_json(json.loads(body)["data"][0]["b64_json"])
    del body
    upload = aiohttp.FormData(quote_fields=False)
    payload = {"content": "done", "attachments": [{"id": 0, "filename": "result.png"}]}
    upload.add_field("payload_json", json.dumps(payload), content_type="application/json")
    upload.add_field("files[0]", image, filename="result.png", content_type="image/png")
    async with session.patch(job["webhook_url"], data=upload) as response:
        await response.read()
        return response.status


async def main() -> None:
    """Serve jobs from stdin until it closes."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            job = json.loads(line)
            try:
                async with asyncio.timeout(JOB_TIMEOUT):
                    status = await edit_once(session, job)
                print(f"done {job['id']} {status}", flush=True)
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                print(f"error {job['id']} {type(exc).__name__}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
