#!/usr/bin/env python3
# Issue 19: one pipelining client's throughput before and after 200 connections are refused at
# the cap. Usage: scripts/refusals.py target/release/upcase target/release/upcase-bench
import socket, subprocess, sys, time, re
exe, bench = sys.argv[1], sys.argv[2]
srv = subprocess.Popen([exe, "serve", "--tcp", "127.0.0.1:0", "--no-udp", "--max-conns", "2", "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
addr = srv.stdout.readline().split()[-1]
host, port = addr.rsplit(":", 1)
def run():
    out = subprocess.run([bench, "--mode", "stream", "--addr", addr, "-c", "1", "-w", "64", "--size", "1024", "--duration", "3"], capture_output=True, text=True).stdout
    m = re.search(r"([\d.]+) MB/s", out)
    return float(m.group(1)) if m else out
before = run()
holders = [socket.create_connection((host, int(port))) for _ in range(2)]
for h in holders: h.sendall(b"x\n"); h.recv(16)
for i in range(200):
    s = socket.create_connection((host, int(port)))
    data = b""
    while True:
        b = s.recv(64)
        if not b: break
        data += b
    assert data == b"error: too many connections\n", data
    s.close()
for h in holders: h.close()
time.sleep(0.2)
after = run()
print(f"before {before} MB/s, after 200 refusals {after} MB/s, ratio {after/before:.2f}")
srv.terminate(); srv.wait()
