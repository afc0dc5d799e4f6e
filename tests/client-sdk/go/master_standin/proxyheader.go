package main

import (
	"encoding/binary"
	"net"
)

// proxyV2 is the PROXY protocol v2 header (haproxy's proxy-protocol.txt, 2.2) for a TCP over IPv4
// connection from src to dst, with no TLVs: what the master writes first on every stream of a
// registration that asked for it.
func proxyV2(src, dst *net.TCPAddr) []byte {
	h := []byte("\r\n\r\n\x00\r\nQUIT\n")
	h = append(h, 0x21, 0x11) // version 2, PROXY; AF_INET, STREAM
	h = binary.BigEndian.AppendUint16(h, 12)
	h = append(h, src.IP.To4()...)
	h = append(h, dst.IP.To4()...)
	h = binary.BigEndian.AppendUint16(h, uint16(src.Port))
	h = binary.BigEndian.AppendUint16(h, uint16(dst.Port))
	return h
}
