#!/usr/bin/env python3
"""A loopback HTTP proxy in front of the S3 server that injects faults on chosen requests.

    fault_proxy.py --listen 0 --upstream 127.0.0.1:7480 --port-file FILE

Prints nothing; writes the port it listens on to FILE. One request per client connection (the
reply carries "Connection: close"). The fault plan is set over the proxy itself:

    GET /__fault__?mode=MODE&every=N[&seconds=S]   -> 200 "ok"
    GET /__fault__/stats                           -> JSON {"requests": n, "faults": n}

MODE (applied to every N-th proxied request; counting restarts when the plan is set):
    none       forward everything
    503        answer 503 SlowDown without contacting the server
    reset      read the request, then reset the connection (no reply)
    reset-mid  forward, relay half of the reply, then reset the connection
    stall      wait S seconds before doing anything (the client's stall timeout fires), then close
"""

import argparse
import asyncio
import json
import socket
import struct
import urllib.parse

PLAN = {"mode": "none", "every": 0, "seconds": 0.0}
STATS = {"requests": 0, "faults": 0}


async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1].strip())
    body = await reader.readexactly(length) if length else b""
    return head, lines[0], body


def reset(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def with_connection_close(head):
    lines = head.decode("latin-1").split("\r\n")
    kept = [l for l in lines if l and not l.lower().startswith("connection:")]
    return ("\r\n".join(kept) + "\r\nConnection: close\r\n\r\n").encode("latin-1")


async def handle(reader, writer, upstream):
    try:
        head, request_line, body = await read_request(reader)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
        return
    method, target, _ = request_line.split(" ", 2)
    if target.startswith("/__fault__"):
        url = urllib.parse.urlparse(target)
        if url.path == "/__fault__/stats":
            payload = json.dumps(STATS).encode()
        else:
            q = urllib.parse.parse_qs(url.query)
            PLAN["mode"] = q.get("mode", ["none"])[0]
            PLAN["every"] = int(q.get("every", ["1"])[0])
            PLAN["seconds"] = float(q.get("seconds", ["0"])[0])
            STATS["requests"] = 0
            STATS["faults"] = 0
            payload = b"ok"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(payload) + payload)
        await writer.drain()
        writer.close()
        return

    STATS["requests"] += 1
    n = STATS["requests"]
    mode = PLAN["mode"]
    fault = mode != "none" and PLAN["every"] > 0 and n % PLAN["every"] == 0
    if fault:
        STATS["faults"] += 1
        if mode == "503":
            xml = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                   b"<Message>injected by fault_proxy</Message></Error>")
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(xml) + xml)
            await writer.drain()
            writer.close()
            return
        if mode == "reset":
            reset(writer)
            return
        if mode == "stall":
            await asyncio.sleep(PLAN["seconds"])
            writer.close()
            return

    host, port = upstream.rsplit(":", 1)
    try:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        up_writer.write(with_connection_close(head) + body)
        await up_writer.drain()
        reply = await up_reader.read()
        up_writer.close()
    except (ConnectionError, OSError):
        reset(writer)
        return
    if fault and mode == "reset-mid":
        writer.write(reply[: max(1, len(reply) // 2)])
        await writer.drain()
        reset(writer)
        return
    sep = reply.find(b"\r\n\r\n")
    if sep >= 0:
        reply = with_connection_close(reply[: sep + 4]) + reply[sep + 4 :]
    writer.write(reply)
    try:
        await writer.drain()
    except ConnectionError:
        pass
    writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, default=0)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--port-file", required=True)
    a = ap.parse_args()
    server = await asyncio.start_server(lambda r, w: handle(r, w, a.upstream), "127.0.0.1", a.listen)
    port = server.sockets[0].getsockname()[1]
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(port))
    import os

    os.rename(a.port_file + ".tmp", a.port_file)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
