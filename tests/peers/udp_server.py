# UDPServer.py from the slides: answer each datagram with its upper case.
# Usage: udp_server.py [PORT] (default 0: the system picks; the slides use 12000).
import sys
from socket import *

serverPort = int(sys.argv[1]) if len(sys.argv) > 1 else 0
serverSocket = socket(AF_INET, SOCK_DGRAM)
serverSocket.bind(("127.0.0.1", serverPort))
print("The server is ready to receive on port", serverSocket.getsockname()[1], flush=True)
while True:
    message, clientAddress = serverSocket.recvfrom(1024)
    modifiedMessage = message.decode().upper()
    serverSocket.sendto(modifiedMessage.encode(), clientAddress)
