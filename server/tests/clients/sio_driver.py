"""A python-socketio client driven over stdin/stdout, with the same line protocol as
sio_driver.cjs (see there), so the Rust tests script both official clients alike.

    python sio_driver.py URL TRANSPORT      (TRANSPORT: websocket | polling | upgrade)

It uses python-socketio's asyncio client: the threaded client hands each incoming
event to a thread of its own, so the order in which it reports events is not the
order in which they arrived, and the tests check that order.
"""
import asyncio
import json
import sys

import socketio

# python-engineio refuses a long-polling response of more than 16 packets; the node
# paces what it hands a polling connection so that no answer carries more. The client is
# used exactly as shipped.

MODES = {"websocket": ["websocket"], "polling": ["polling"], "upgrade": ["polling", "websocket"]}


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main():
    if len(sys.argv) != 3 or sys.argv[2] not in MODES:
        print("usage: sio_driver.py URL websocket|polling|upgrade", file=sys.stderr)
        sys.exit(2)
    url, mode = sys.argv[1], sys.argv[2]
    sio = socketio.AsyncClient(reconnection=False)

    @sio.event
    def connect():
        out({"type": "connected", "sid": sio.get_sid(), "transport": sio.transport()})

    @sio.event
    def connect_error(data):
        out({"type": "error", "message": str(data)})

    @sio.event
    def disconnect(reason=None):
        out({"type": "disconnected", "reason": str(reason)})

    @sio.on("*")
    def any_event(event, *args):
        out({"type": "event", "event": event, "args": list(args)})

    try:
        await sio.connect(url, transports=MODES[mode], wait_timeout=10)
    except Exception as err:  # reported to the test, which fails with the reason
        out({"type": "error", "message": str(err)})
        sys.exit(1)

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while True:
        line = await stdin.readline()
        if not line:
            break
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd["op"] == "emit":
            args = cmd["args"]
            if not args:
                await sio.emit(cmd["event"])
            elif len(args) == 1:
                await sio.emit(cmd["event"], args[0])
            else:
                await sio.emit(cmd["event"], tuple(args))
        elif cmd["op"] == "send":
            await sio.send(cmd["args"][0])
        elif cmd["op"] == "close":
            break
        else:
            out({"type": "error", "message": "unknown op " + cmd["op"]})
    # python-engineio's polling writer stops as soon as the client is disconnecting: if a
    # POST (say, of the namespace CONNECT) is still in flight when disconnect() queues
    # the DISCONNECT and CLOSE packets, they are never sent and the server only learns of
    # the departure from the heartbeat, 45 s later. Let every queued packet go first.
    try:
        await asyncio.wait_for(sio.eio.queue.join(), 5)
    except asyncio.TimeoutError:
        pass
    await sio.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
