#!/usr/bin/env python3
"""A local RPC client on libzmq (pyzmq), to check that DeviceHub's ZeroMQ sockets interoperate
with the reference implementation: REQ/REP requests with and without the token, and a SUB
socket receiving a `health` message.

Usage: rpc_client.py REQUEST_PORT PUBLISH_PORT TOKEN_FILE
Prints one JSON object with what it saw; exits non-zero when a step fails.
"""

import json
import sys

import zmq

TIMEOUT_MS = 15000


def request(context, port, body):
    """Sends one request on a fresh REQ socket and returns the parsed reply."""
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    socket.setsockopt(zmq.SNDTIMEO, TIMEOUT_MS)
    socket.connect(f"tcp://127.0.0.1:{port}")
    try:
        socket.send(json.dumps(body).encode())
        return json.loads(socket.recv())
    finally:
        socket.close()


def main():
    request_port, publish_port, token_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    with open(token_file, encoding="ascii") as f:
        token = f.read().strip()
    context = zmq.Context()

    subscriber = context.socket(zmq.SUB)
    subscriber.setsockopt(zmq.LINGER, 0)
    subscriber.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"health")
    subscriber.connect(f"tcp://127.0.0.1:{publish_port}")

    status = request(
        context, request_port, {"token": token, "id": "py-1", "method": "status"}
    )
    refused = request(context, request_port, {"id": "py-2", "method": "status"})
    devices = request(
        context,
        request_port,
        {"token": token, "id": 3, "method": "devices", "params": {}},
    )

    topic, body = subscriber.recv_multipart()
    subscriber.close()
    context.term()
    print(
        json.dumps(
            {
                "status": status,
                "refused": refused,
                "devices": devices,
                "published": {"topic": topic.decode(), "body": json.loads(body)},
            }
        )
    )


if __name__ == "__main__":
    main()
