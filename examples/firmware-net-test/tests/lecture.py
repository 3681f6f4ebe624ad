# The lecture's clients, as the lecture wrote them, against the firmware's forwarded ports.
# TCP: the lecture's client sends b"hello" with no newline. In `lines` framing (PROTOCOL.md
# §2.1) an unterminated line is answered at end of stream, so the client half-closes first.
import socket
import sys

HOST = "127.0.0.1"
TCP_PORT = int(sys.argv[1])
UDP_PORT = int(sys.argv[2])

with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.settimeout(20)
    s.connect((HOST, TCP_PORT))
    s.sendall(b"hello")
    s.shutdown(socket.SHUT_WR)
    data = s.recv(1024)

print(f"Received {data!r}")

with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(20)
    s.sendto(b"hello", (HOST, UDP_PORT))
    data, _ = s.recvfrom(1024)

print(f"Received {data!r}")
