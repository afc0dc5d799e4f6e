#!/usr/bin/python3
"""WebSocket echo client for the end-to-end tests (Debian's python3-websockets).

    ws_echo_client.py URL [CAFILE]

Sends a text message, a 200 KB text message, a binary message and a ping; each must come back
unchanged (the pong for the ping); then closes cleanly with code 1000. Prints "ECHO OK" on success,
anything else (and exits 1) on failure. Every step is bounded in time.
"""
import asyncio
import ssl
import sys

import websockets


async def main(url, cafile):
    context = None
    if url.startswith("wss://"):
        context = ssl.create_default_context(cafile=cafile)
    async with websockets.connect(url, ssl=context, open_timeout=10, close_timeout=10,
                                  max_size=1 << 22) as ws:
        for message in ["hello through socketmaster", "x" * 200_000, bytes(range(256)) * 4]:
            await ws.send(message)
            echoed = await asyncio.wait_for(ws.recv(), 10)
            if echoed != message:
                raise RuntimeError(f"echo mismatch: sent {len(message)} got {len(echoed)}")
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 10)
        await ws.close(code=1000)
        if ws.close_code != 1000:
            raise RuntimeError(f"close code {ws.close_code}")
    print("ECHO OK")


try:
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
except Exception as e:  # one line the test can show
    print(f"FAIL {type(e).__name__}: {e}")
    sys.exit(1)
