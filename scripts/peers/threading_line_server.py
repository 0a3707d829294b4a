# The best a Python user gets from the standard library: socketserver's ThreadingTCPServer
# with a persistent, line-based handler (a thread per connection, many requests per connection).
# A peer of the benchmark report (scripts/bench.sh); the slides' own servers are in tests/peers/.
# Usage: threading_line_server.py [PORT] (default 0: the system picks).
import socketserver
import sys


class UpperLineHandler(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line.decode().upper().encode())


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True  # held connections do not keep the process alive at exit


port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
with Server(("127.0.0.1", port), UpperLineHandler) as server:
    print("The server is ready to receive on port", server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
