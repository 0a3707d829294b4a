# The slides' multithreaded TCPServer.py: one thread per connection (thd_func).
# Usage: tcp_server_threaded.py [PORT] (default 0: the system picks; the slides use 12000).
import sys
import threading
from socket import *


def thd_func(connectionSocket):
    sentence = connectionSocket.recv(1024).decode()
    capitalizedSentence = sentence.upper()
    connectionSocket.send(capitalizedSentence.encode())
    connectionSocket.close()


serverPort = int(sys.argv[1]) if len(sys.argv) > 1 else 0
serverSocket = socket(AF_INET, SOCK_STREAM)
serverSocket.bind(("127.0.0.1", serverPort))
serverSocket.listen(5)
print("The server is ready to receive on port", serverSocket.getsockname()[1], flush=True)
while True:
    client, addr = serverSocket.accept()
    threading.Thread(target=thd_func, args=(client,)).start()
