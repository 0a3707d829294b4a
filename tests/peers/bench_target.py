# A TCP server for bench's tests, in plain Python sockets: one thread per connection.
# Usage: bench_target.py MODE, MODE one of
#   upper     answer every read with its upper case until the client closes (keep-alive)
#   truncate  read one request, send the first half of its upper case, close
#   reset     read one request, close with SO_LINGER 0 (a reset, no reply)
# Prints "ready PORT" on stdout once listening on 127.0.0.1 (an ephemeral port).
import socket
import struct
import sys
import threading

mode = sys.argv[1]


def serve(conn):
    with conn:
        if mode == "upper":
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data.upper())
        request = conn.recv(65536)
        if not request:
            return
        if mode == "truncate":
            conn.sendall(request.upper()[: len(request) // 2])
        elif mode == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.bind(("127.0.0.1", 0))
listener.listen(128)
print("ready", listener.getsockname()[1], flush=True)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
