# TCPClient.py from the slides: send one sentence, print the server's reply.
# Usage: tcp_client.py HOST PORT SENTENCE (the slides hard-code serverName and 12000).
import sys
from socket import *

serverName, serverPort, sentence = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# The slides use AF_INET; getaddrinfo picks AF_INET6 for an IPv6 host such as ::1.
family = getaddrinfo(serverName, serverPort, type=SOCK_STREAM)[0][0]
clientSocket = socket(family, SOCK_STREAM)
clientSocket.connect((serverName, serverPort))
clientSocket.send(sentence.encode())
modifiedSentence = clientSocket.recv(1024)
print("From Server:", modifiedSentence.decode())
clientSocket.close()
