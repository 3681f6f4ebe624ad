#!/usr/bin/env python3
"""Lockstep load for scripts/syscalls.sh: N clients, R rounds; each round sends one 64 B request
on every client, then reads every reply, checking each. Usage: lockstep.py tcp|udp PORT N R"""
import socket
import sys

proto, port, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
server = ("127.0.0.1", port)
if proto == "tcp":
    clients = [socket.create_connection(server) for _ in range(n)]
    for c in clients:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
else:
    clients = []
    for _ in range(n):
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.connect(server)
        c.settimeout(10)
        clients.append(c)
for r in range(rounds):
    # Each request differs: the server's loop guard drops repeated replies to one peer.
    line = (b"round %d " % r).ljust(63, b"x") + b"\n"
    for c in clients:
        c.sendall(line) if proto == "tcp" else c.send(line)
    for c in clients:
        if proto == "tcp":
            got = b""
            while len(got) < 64:
                got += c.recv(64 - len(got))
        else:
            got = c.recv(100)
        assert got == line.upper(), got
for c in clients:
    c.close()
print("ok", n * rounds)
