#!/usr/bin/env python3
"""How much a host client can write to the guest without reading before its writes block:
QEMU's user network buffers the replies (README, "Backpressure"). Boots IMAGE through run.sh on
free ports, writes lines of 256 bytes without reading until the writes stall for 3 s, prints
the total, and kills QEMU.  tools/backpressure.py target/thumbv7m-none-eabi/release/upcase-firmware-net"""
import socket, subprocess, time, sys, os
img=sys.argv[1]
def port(t):
    s=socket.socket(socket.AF_INET,t); s.bind(("127.0.0.1",0)); p=s.getsockname()[1]; s.close(); return p
tcp,udp=port(socket.SOCK_STREAM),port(socket.SOCK_DGRAM)
env=dict(os.environ,UPCASE_NET_TCP=str(tcp),UPCASE_NET_UDP=str(udp))
p=subprocess.Popen([os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "run.sh"), img],env=env,stdout=subprocess.PIPE,stderr=subprocess.DEVNULL,text=True)
p.stdout.readline(); p.stdout.readline()
c=socket.create_connection(("127.0.0.1",tcp)); c.setblocking(False)
line=b"a"*255+b"\n"; sent=0; last=time.time()
while time.time()-last<3:
    try:
        n=c.send(line*64); sent+=n; last=time.time()
    except BlockingIOError:
        time.sleep(0.05)
rcv=c.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
print("client wrote %.2f MB before the writes stalled for 3 s (client SO_RCVBUF %d)"%(sent/1e6, rcv))
p.kill()
