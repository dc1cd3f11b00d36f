#!/usr/bin/env python3
"""A small HTTP/1.1 proxy that injects network faults in front of an S3 server, for the
object-store tests: every K-th request is answered `503 Slow Down` (S3's throttling
error) or has its connection dropped without an answer, alternately; the others are
forwarded. `--down` fails every request; `--fail-after N` forwards the first N requests
and fails every later one (an outage in the middle of a job). Standard library only.

Usage: fault_proxy.py --listen PORT --upstream HOST:PORT [--fail-every K] [--down] [--fail-after N]
Prints `listening on PORT` when ready, and a count of faults on exit (SIGTERM).
"""

import argparse
import asyncio
import signal
import sys

SLOW_DOWN = (b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
             b"Connection: keep-alive\r\n\r\n%s")
BODY = b"<Error><Code>SlowDown</Code><Message>injected by fault_proxy.py</Message></Error>"


async def read_message(reader: asyncio.StreamReader, is_response: bool):
    """One HTTP/1.1 message: (head bytes, body bytes), or None at EOF."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            body += size_line + chunk
            if size == 0:
                break
    elif is_response and not lines[0].split(" ")[1].startswith(("1", "204", "304")):
        body = await reader.read()
    else:
        body = b""
    return head, body


class Proxy:
    def __init__(self, upstream: str, fail_every: int, down: bool, fail_after: int):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.fail_every, self.down, self.fail_after = fail_every, down, fail_after
        self.requests = self.dropped = self.throttled = 0

    def fault(self):
        self.requests += 1
        if self.down or (self.fail_after and self.requests > self.fail_after):
            return "throttle" if self.requests % 2 else "drop"
        if self.fail_every and self.requests % self.fail_every == 0:
            return "throttle" if (self.requests // self.fail_every) % 2 else "drop"
        return None

    async def handle(self, reader, writer):
        try:
            while True:
                try:
                    head, body = await read_message(reader, False)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                f = self.fault()
                if f == "drop":
                    self.dropped += 1
                    return  # close without answering
                if f == "throttle":
                    self.throttled += 1
                    writer.write(SLOW_DOWN % (len(BODY), BODY))
                    await writer.drain()
                    continue
                up_r, up_w = await asyncio.open_connection(*self.upstream)
                # One upstream connection per request: ask it to close after answering.
                head = head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1) \
                    if b"connection:" not in head.lower() else head
                up_w.write(head + body)
                await up_w.drain()
                rhead, rbody = await read_message(up_r, True)
                up_w.close()
                writer.write(rhead + rbody)
                await writer.drain()
        finally:
            writer.close()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--fail-every", type=int, default=0)
    ap.add_argument("--down", action="store_true")
    ap.add_argument("--fail-after", type=int, default=0)
    a = ap.parse_args()
    p = Proxy(a.upstream, a.fail_every, a.down, a.fail_after)
    server = await asyncio.start_server(p.handle, "127.0.0.1", a.listen)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"listening on {a.listen}", flush=True)
    async with server:
        await stop.wait()
    print(f"requests {p.requests}, throttled {p.throttled}, dropped {p.dropped}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
