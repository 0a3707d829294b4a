# TCPServer.py from the slides: the iterative server, one connection at a time.
# Usage: tcp_server_sequential.py [PORT] (default 0: the system picks; the slides use 12000).
import sys
from socket import *

serverPort = int(sys.argv[1]) if len(sys.argv) > 1 else 0
serverSocket = socket(AF_INET, SOCK_STREAM)
serverSocket.bind(("127.0.0.1", serverPort))
serverSocket.listen(5)
print("The server is ready to receive on port", serverSocket.getsockname()[1], flush=True)
while True:
    connectionSocket, addr = serverSocket.accept()
    sentence = connectionSocket.recv(1024).decode()
    capitalizedSentence = sentence.upper()
    connectionSocket.send(capitalizedSentence.encode())
    connectionSocket.close()
