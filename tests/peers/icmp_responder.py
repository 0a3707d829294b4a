"""A scripted ICMP echo responder for socketkit's ping tests (run as root, in a network namespace
whose kernel does not answer echo requests itself: net.ipv4.icmp_echo_ignore_all=1).

It answers requests to 127.0.0.1 on a raw socket, by sequence number:
  1: once, after LATE seconds (a late reply when ping's -W is shorter)
  2: twice at once (a duplicate)
  3: first with packets that are not ping's reply (another identifier, another payload, a
     timestamp reply, an echo reply shorter than a header), then the reply itself
  4 and on: never (lost)
Prints "ready" once its socket is open, then runs until killed.

Usage: icmp_responder.py LATE_SECONDS
"""

import socket
import struct
import sys
import threading


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp(kind, ident, seq, payload):
    header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
    total = checksum(header + payload)
    return struct.pack("!BBHHH", kind, 0, total, ident, seq) + payload


def main():
    late = float(sys.argv[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    print("ready", flush=True)
    while True:
        packet, (source, _) = sock.recvfrom(70000)
        header_len = (packet[0] & 0x0F) * 4
        message = packet[header_len:]
        if len(message) < 8 or message[0] != 8:  # only echo requests
            continue
        _, _, _, ident, seq = struct.unpack("!BBHHH", message[:8])
        payload = message[8:]
        reply = icmp(0, ident, seq, payload)
        if seq == 1:
            threading.Timer(late, sock.sendto, (reply, (source, 0))).start()
        elif seq == 2:
            sock.sendto(reply, (source, 0))
            sock.sendto(reply, (source, 0))
        elif seq == 3:
            for other in (
                icmp(0, ident ^ 0xFFFF, seq, payload),  # another process's identifier
                icmp(0, ident, seq, bytes(len(payload))),  # a payload that is not ours
                icmp(14, ident, seq, payload),  # a timestamp reply
                icmp(0, ident, seq, b"")[:6],  # shorter than a header
            ):
                sock.sendto(other, (source, 0))
            sock.sendto(reply, (source, 0))


if __name__ == "__main__":
    main()
