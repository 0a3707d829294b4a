# UDPClient.py from the slides: send one sentence in a datagram, print the reply.
# Usage: udp_client.py HOST PORT SENTENCE (the slides hard-code serverName and 12000).
import sys
from socket import *

serverName, serverPort, message = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# The slides use AF_INET; getaddrinfo picks AF_INET6 for an IPv6 host such as ::1.
family = getaddrinfo(serverName, serverPort, type=SOCK_DGRAM)[0][0]
clientSocket = socket(family, SOCK_DGRAM)
clientSocket.sendto(message.encode(), (serverName, serverPort))
modifiedMessage, serverAddress = clientSocket.recvfrom(1024)
print("From Server:", modifiedMessage.decode())
clientSocket.close()
