package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// proxyV2Signature starts every PROXY protocol v2 header.
var proxyV2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// proxyHeader is the part of a PROXY v2 header this service cares about.
type proxyHeader struct {
	Command byte         // 0 = LOCAL, 1 = PROXY
	Family  byte         // high nibble of byte 13: 0 UNSPEC, 1 INET, 2 INET6, 3 UNIX
	Proto   byte         // low nibble of byte 13: 0 UNSPEC, 1 STREAM, 2 DGRAM
	Src     *net.TCPAddr // nil unless a PROXY command for INET/INET6
	Dst     *net.TCPAddr
	Len     int // total header bytes consumed (16 + address block)
}

// maxProxyBlock bounds the address block (UNIX addresses plus TLVs stay far below it).
const maxProxyBlock = 4096

// readProxyHeader reads exactly one PROXY protocol v2 header from r and nothing more.
func readProxyHeader(r io.Reader) (proxyHeader, error) {
	var fixed [16]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return proxyHeader{}, fmt.Errorf("reading PROXY header: %w", err)
	}
	if !bytes.Equal(fixed[:12], proxyV2Signature) {
		return proxyHeader{}, fmt.Errorf("no PROXY v2 signature: % x", fixed[:12])
	}
	if v := fixed[12] >> 4; v != 2 {
		return proxyHeader{}, fmt.Errorf("PROXY header version %d, want 2", v)
	}
	h := proxyHeader{Command: fixed[12] & 0x0f, Family: fixed[13] >> 4, Proto: fixed[13] & 0x0f}
	if h.Command > 1 {
		return proxyHeader{}, fmt.Errorf("PROXY header command %d is neither LOCAL nor PROXY", h.Command)
	}
	n := int(binary.BigEndian.Uint16(fixed[14:16]))
	if n > maxProxyBlock {
		return proxyHeader{}, fmt.Errorf("PROXY address block of %d bytes exceeds %d", n, maxProxyBlock)
	}
	block := make([]byte, n)
	if _, err := io.ReadFull(r, block); err != nil {
		return proxyHeader{}, fmt.Errorf("reading PROXY address block: %w", err)
	}
	h.Len = 16 + n
	if h.Command == 0 { // LOCAL: the addresses, if any, are to be ignored
		return h, nil
	}
	switch h.Family {
	case 1:
		if n < 12 {
			return proxyHeader{}, fmt.Errorf("PROXY INET block of %d bytes, need 12", n)
		}
		h.Src = &net.TCPAddr{IP: net.IP(append([]byte(nil), block[0:4]...)), Port: int(binary.BigEndian.Uint16(block[8:10]))}
		h.Dst = &net.TCPAddr{IP: net.IP(append([]byte(nil), block[4:8]...)), Port: int(binary.BigEndian.Uint16(block[10:12]))}
	case 2:
		if n < 36 {
			return proxyHeader{}, fmt.Errorf("PROXY INET6 block of %d bytes, need 36", n)
		}
		h.Src = &net.TCPAddr{IP: net.IP(append([]byte(nil), block[0:16]...)), Port: int(binary.BigEndian.Uint16(block[32:34]))}
		h.Dst = &net.TCPAddr{IP: net.IP(append([]byte(nil), block[16:32]...)), Port: int(binary.BigEndian.Uint16(block[34:36]))}
	case 0, 3:
		// UNSPEC or UNIX: no IP source to report.
	default:
		return proxyHeader{}, fmt.Errorf("PROXY header family %d is unknown", h.Family)
	}
	return h, nil
}

// proxyConn is a stream whose PROXY header has been consumed; RemoteAddr reports the header's
// source when it carried one.
type proxyConn struct {
	net.Conn
	remote net.Addr
}

func (c *proxyConn) RemoteAddr() net.Addr { return c.remote }

// stripProxy consumes the PROXY header from conn (bounded by timeout) and returns a conn that
// reports the client address from it.
func stripProxy(conn net.Conn, timeout time.Duration) (net.Conn, error) {
	if timeout > 0 {
		_ = conn.SetReadDeadline(time.Now().Add(timeout))
	}
	h, err := readProxyHeader(conn)
	if timeout > 0 {
		_ = conn.SetReadDeadline(time.Time{})
	}
	if err != nil {
		return nil, err
	}
	remote := conn.RemoteAddr()
	if h.Src != nil {
		remote = h.Src
	}
	return &proxyConn{Conn: conn, remote: remote}, nil
}

// streamListener adapts the yamux session for http.Serve: it optionally strips the PROXY
// header of each stream off the accept path (one slow stream does not block the others), wraps
// each stream in a deadlineConn (see there for why), and its
// Close stops accepting without closing the session, so http.Server.Shutdown can drain streams
// that are still in flight.
type streamListener struct {
	inner      net.Listener
	proxy      bool
	ready      chan net.Conn
	done       chan struct{}
	closeOnce  sync.Once
	errOnce    sync.Once
	err        error
	errc       chan struct{}
	logf       func(format string, args ...interface{})
	stripLimit time.Duration
}

func newStreamListener(inner net.Listener, proxy bool, logf func(string, ...interface{})) *streamListener {
	l := &streamListener{
		inner: inner, proxy: proxy, ready: make(chan net.Conn), done: make(chan struct{}),
		errc: make(chan struct{}), logf: logf, stripLimit: 10 * time.Second,
	}
	go l.pump()
	return l
}

func (l *streamListener) pump() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			l.errOnce.Do(func() { l.err = err; close(l.errc) })
			return
		}
		if !l.proxy {
			l.deliver(newDeadlineConn(c))
			continue
		}
		go func(c net.Conn) {
			pc, err := stripProxy(c, l.stripLimit)
			if err != nil {
				l.logf("dropping stream: %v", err)
				c.Close()
				return
			}
			l.deliver(newDeadlineConn(pc))
		}(c)
	}
}

func (l *streamListener) deliver(c net.Conn) {
	select {
	case l.ready <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-l.errc:
		// Prefer a stream that is already stripped and waiting.
		select {
		case c := <-l.ready:
			return c, nil
		default:
		}
		return nil, l.err
	}
}

// Close stops Accept; it leaves the session (and its streams) alone.
func (l *streamListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *streamListener) Addr() net.Addr { return l.inner.Addr() }
