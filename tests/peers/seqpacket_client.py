"""A SOCK_SEQPACKET client with nothing but Python's socket module: the interop peer of
socketkit's unixpacket:// endpoint.

Usage: seqpacket_client.py PATH RECORD...   (a RECORD "@N" stands for N bytes of "x")

Sends every record back to back, then reads one reply per record and prints each as hex on a
line of its own; then half-closes and prints "eof" when the server closes. A connection the
server ends early prints "eof" (or "reset") where the replies would be.
"""
import socket
import sys

path, records = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(10)  # a safety net: a bug fails fast, it never synchronises
s.connect(path)
for record in records:
    data = b"x" * int(record[1:]) if record.startswith("@") else record.encode()
    s.send(data)
try:
    for _ in records:
        # A buffer far larger than any reply: a reply merged from two would show whole.
        reply = s.recv(1 << 20)
        if not reply:
            print("eof")
            sys.exit(0)
        print(reply.hex())
    s.shutdown(socket.SHUT_WR)
    print("eof" if s.recv(1 << 20) == b"" else "more")
except ConnectionResetError:
    print("reset")
