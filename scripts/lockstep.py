# Lockstep pingpong: N connections, R rounds; each round sends one 64 B line on every
# connection, then reads every reply. Checks every reply. Usage: pp.py PORT N R
import socket, sys
port, n, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
for c in conns:
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
line = b"x" * 63 + b"\n"
for r in range(rounds):
    for c in conns:
        c.sendall(line)
    for c in conns:
        got = b""
        while len(got) < 64:
            got += c.recv(64 - len(got))
        assert got == line.upper(), got
for c in conns:
    c.close()
print("ok", n * rounds)
