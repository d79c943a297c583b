#!/usr/bin/env python3
"""A libzmq (pyzmq) SUB socket for DeviceHub's own publisher: connects, subscribes to one
prefix, receives a given number of messages and prints them as one JSON list of frame lists.

Usage: pub_subscriber.py PUBLISH_PORT PREFIX COUNT
Exits non-zero when a message does not arrive within the timeout.
"""

import json
import sys

import zmq

TIMEOUT_MS = 15000


def main():
    port, prefix, count = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
    context = zmq.Context()
    subscriber = context.socket(zmq.SUB)
    subscriber.setsockopt(zmq.LINGER, 0)
    subscriber.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    subscriber.setsockopt(zmq.SUBSCRIBE, prefix)
    subscriber.connect(f"tcp://127.0.0.1:{port}")
    seen = []
    for _ in range(count):
        frames = subscriber.recv_multipart()
        seen.append([frame.decode() for frame in frames])
    subscriber.close()
    context.term()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
