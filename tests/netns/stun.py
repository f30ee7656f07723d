"""The smallest STUN responder (RFC 5389) for the NAT tests: every Binding Request gets a
success response carrying the address it came from (XOR-MAPPED-ADDRESS), sent back from
the address it was sent to. CHANGE-REQUEST is ignored.

It exists for miniupnpd. A router whose own wan address is in a documentation range (as
in the tests' internet) counts as "behind NAT" to miniupnpd, which then maps nothing
unless a STUN check (ext_perform_stun) says its address is reachable as it is; this
answers that check. It listens on ARGV[1]:ARGV[2], prints one line when ready, and runs
until killed."""

import socket
import struct
import sys

COOKIE = 0x2112A442
BINDING_REQUEST = b"\x00\x01"
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
print("stun listening on %s:%d" % sock.getsockname(), flush=True)
while True:
    data, (ip, port) = sock.recvfrom(2048)
    if len(data) < 20 or data[0:2] != BINDING_REQUEST:
        continue
    xport = port ^ (COOKIE >> 16)
    xip = struct.unpack("!I", socket.inet_aton(ip))[0] ^ COOKIE
    attribute = struct.pack("!HHBBHI", XOR_MAPPED_ADDRESS, 8, 0, 1, xport, xip)
    header = struct.pack("!HHI", BINDING_SUCCESS, len(attribute), COOKIE)
    sock.sendto(header + data[8:20] + attribute, (ip, port))
