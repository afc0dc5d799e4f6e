package main

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// The routes match the END of the path, so they work whether or not the master strips a
// registered path prefix: /bytes/10 and /a/bytes/10 are the same route.
//
//   .../bytes/N     N bytes of 'x' with Content-Length
//   .../ws          WebSocket echo (text, binary, ping, close)
//   .../slow?ms=N   sleep N ms, then the default answer
//   .../slow?ms=N&head=first   the head of the default answer at once, its body N ms later (a
//                   client that has the head knows the request is in the handler)
//   .../echo-body   the request body back, with Content-Length
//   .../headers     the request's headers, one "Name: value" line each, sorted (Host first)
//   .../then-close  the default answer, then the connection (stream) is closed although the
//                   answer did not say so: what a server closing an idle keep-alive connection does
//   .../early-hints?pad=N  a 103 Early Hints (Link header), then the default answer; with pad, both
//                   heads carry an X-Pad header of N bytes (a head longer than one read)
//   .../accept-order  "stream N\n": the request came on the Nth stream this instance accepted
//                   (counted as the server accepts them, in the order the master opened them)
//   anything else   200 "<text>\npath: <path>\nclient: <addr>\nxff: <X-Forwarded-For>\n"

// tracker counts work that http.Server.Shutdown does not see (hijacked WebSocket connections,
// echo streams).
type tracker struct {
	mu sync.Mutex
	n  int
}

func (t *tracker) add() { t.mu.Lock(); t.n++; t.mu.Unlock() }

func (t *tracker) done() { t.mu.Lock(); t.n--; t.mu.Unlock() }

func (t *tracker) count() int { t.mu.Lock(); defer t.mu.Unlock(); return t.n }

// wait returns true once nothing is tracked, false if the deadline passes first.
func (t *tracker) wait(deadline time.Time) bool {
	for t.count() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

type app struct {
	text     string
	ws       tracker
	logf     func(format string, args ...interface{})
	accepted int64 // streams accepted so far (connContext)
}

type acceptOrderKey struct{}

// connContext is the server's ConnContext: http.Server calls it in its accept loop, one stream
// after another, so the number it stamps is the stream's place in the accept order.
func (a *app) connContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, acceptOrderKey{}, atomic.AddInt64(&a.accepted, 1))
}

func (a *app) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if r.Method == http.MethodConnect {
		http.Error(w, "no tunnels here", http.StatusMethodNotAllowed)
		return
	}
	switch {
	case strings.HasSuffix(p, "/ws"):
		a.serveWebSocket(w, r)
	case strings.HasSuffix(p, "/slow"):
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			http.Error(w, "slow wants ?ms=N", http.StatusBadRequest)
			return
		}
		if r.URL.Query().Get("head") == "first" {
			a.serveHeadFirst(w, r, time.Duration(ms)*time.Millisecond)
			return
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		a.serveDefault(w, r)
	case strings.HasSuffix(p, "/headers"):
		a.serveHeaders(w, r)
	case strings.HasSuffix(p, "/early-hints"):
		if n, err := strconv.Atoi(r.URL.Query().Get("pad")); err == nil && n > 0 {
			w.Header().Set("X-Pad", strings.Repeat("p", n))
		}
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		a.serveDefault(w, r)
	case strings.HasSuffix(p, "/accept-order"):
		body := fmt.Sprintf("stream %d\n", r.Context().Value(acceptOrderKey{}).(int64))
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = io.WriteString(w, body)
	case strings.HasSuffix(p, "/then-close"):
		a.serveThenClose(w, r)
	case strings.HasSuffix(p, "/early-close"):
		// Refuses the body unread, as a server does for an upload it will not take: 413 and
		// Connection: close, while the client is still sending.
		w.Header().Set("Connection", "close")
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	case strings.HasSuffix(p, "/echo-body"):
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	default:
		if n, ok := bytesRoute(p); ok {
			serveBytes(w, r, n)
			return
		}
		a.serveDefault(w, r)
	}
}

func (a *app) defaultBody(r *http.Request) string {
	return fmt.Sprintf("%s\npath: %s\nclient: %s\nxff: %s\n", a.text, r.URL.Path, r.RemoteAddr,
		strings.Join(r.Header.Values("X-Forwarded-For"), ", "))
}

func (a *app) serveDefault(w http.ResponseWriter, r *http.Request) {
	body := a.defaultBody(r)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = io.WriteString(w, body)
}

// serveHeadFirst sends the head of the default answer (with its Content-Length) at once and the
// body after `delay`.
func (a *app) serveHeadFirst(w http.ResponseWriter, r *http.Request, delay time.Duration) {
	body := a.defaultBody(r)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	select {
	case <-time.After(delay):
	case <-r.Context().Done():
		return
	}
	_, _ = io.WriteString(w, body)
}

// serveThenClose writes a complete keep-alive answer by hand and closes the connection.
func (a *app) serveThenClose(w http.ResponseWriter, r *http.Request) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	conn, rw, err := hj.Hijack()
	if err != nil {
		a.logf("then-close hijack: %v", err)
		return
	}
	defer conn.Close()
	body := a.defaultBody(r)
	_, _ = fmt.Fprintf(rw, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s",
		len(body), body)
	_ = rw.Flush()
}

// serveHeaders answers the headers as received, so a test can see what a proxy added or replaced.
// net/http moves Host out of r.Header; it comes first.
func (a *app) serveHeaders(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	fmt.Fprintf(&b, "Request-URI: %s\n", r.RequestURI)
	fmt.Fprintf(&b, "Host: %s\n", r.Host)
	names := make([]string, 0, len(r.Header))
	for name := range r.Header {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, v := range r.Header[name] {
			fmt.Fprintf(&b, "%s: %s\n", name, v)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(b.Len()))
	_, _ = io.WriteString(w, b.String())
}

// bytesRoute recognises a path ending in /bytes/N.
func bytesRoute(p string) (int64, bool) {
	i := strings.LastIndex(p, "/bytes/")
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(p[i+len("/bytes/"):], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

func serveBytes(w http.ResponseWriter, r *http.Request, n int64) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	chunk := []byte(strings.Repeat("x", 32*1024))
	for n > 0 {
		c := chunk
		if int64(len(c)) > n {
			c = c[:n]
		}
		if _, err := w.Write(c); err != nil {
			return
		}
		n -= int64(len(c))
	}
}

// --- WebSocket (RFC 6455), server side, by hand ---

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
	wsPing         = 0x9
	wsPong         = 0xA
)

// wsMaxMessage bounds a reassembled message.
const wsMaxMessage = 16 << 20

// wsAccept computes Sec-WebSocket-Accept for a Sec-WebSocket-Key.
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func (a *app) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	if r.Method != http.MethodGet || !headerHasToken(r.Header, "Connection", "upgrade") ||
		!headerHasToken(r.Header, "Upgrade", "websocket") || key == "" {
		http.Error(w, "WebSocket upgrade required", http.StatusBadRequest)
		return
	}
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" {
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "unsupported WebSocket version", http.StatusUpgradeRequired)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	a.ws.add()
	defer a.ws.done()
	conn, rw, err := hj.Hijack()
	if err != nil {
		a.logf("websocket hijack: %v", err)
		return
	}
	defer conn.Close()
	_, _ = fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"+
		"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAccept(key))
	if err := rw.Flush(); err != nil {
		return
	}
	if err := wsEcho(rw.Reader, rw.Writer); err != nil && !errors.Is(err, io.EOF) {
		a.logf("websocket: %v", err)
	}
}

type wsFrame struct {
	fin     bool
	rsv     byte
	opcode  byte
	masked  bool
	payload []byte
}

// readWSFrame reads one frame and unmasks its payload.
func readWSFrame(r io.Reader, maxPayload int64) (wsFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return wsFrame{}, err
	}
	f := wsFrame{fin: h[0]&0x80 != 0, rsv: (h[0] >> 4) & 0x7, opcode: h[0] & 0x0f, masked: h[1]&0x80 != 0}
	n := int64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return wsFrame{}, err
		}
		n = int64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return wsFrame{}, err
		}
		u := binary.BigEndian.Uint64(b[:])
		if u > 1<<62 {
			return wsFrame{}, fmt.Errorf("frame length %d", u)
		}
		n = int64(u)
	}
	if n > maxPayload {
		return wsFrame{}, fmt.Errorf("frame of %d bytes exceeds %d", n, maxPayload)
	}
	var mask [4]byte
	if f.masked {
		if _, err := io.ReadFull(r, mask[:]); err != nil {
			return wsFrame{}, err
		}
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		return wsFrame{}, err
	}
	if f.masked {
		for i := range f.payload {
			f.payload[i] ^= mask[i%4]
		}
	}
	return f, nil
}

// writeWSFrame writes one final, unmasked frame (a server never masks).
func writeWSFrame(w *bufio.Writer, opcode byte, payload []byte) error {
	hdr := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, byte(n))
	case n <= 0xffff:
		hdr = append(hdr, 126, byte(n>>8), byte(n))
	default:
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(n))
		hdr = append(append(hdr, 127), b[:]...)
	}
	if _, err := w.Write(hdr); err != nil {
		return err
	}
	if _, err := w.Write(payload); err != nil {
		return err
	}
	return w.Flush()
}

func wsCloseWith(w *bufio.Writer, code uint16, reason string) error {
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, code)
	_ = writeWSFrame(w, wsClose, append(p, reason...))
	return fmt.Errorf("closed with %d: %s", code, reason)
}

// wsEcho echoes every complete message with its opcode, answers pings, and answers a close frame
// with a close frame carrying the same status code. Returns io.EOF after a clean close.
func wsEcho(r io.Reader, w *bufio.Writer) error {
	var msg []byte
	var msgOp byte
	inMessage := false
	for {
		f, err := readWSFrame(r, wsMaxMessage)
		if err != nil {
			return err
		}
		if f.rsv != 0 {
			return wsCloseWith(w, 1002, "reserved bits set")
		}
		if !f.masked {
			return wsCloseWith(w, 1002, "client frame not masked")
		}
		switch f.opcode {
		case wsPing, wsPong, wsClose:
			if !f.fin || len(f.payload) > 125 {
				return wsCloseWith(w, 1002, "bad control frame")
			}
			switch f.opcode {
			case wsPing:
				if err := writeWSFrame(w, wsPong, f.payload); err != nil {
					return err
				}
			case wsClose:
				var reply []byte
				if len(f.payload) >= 2 {
					reply = f.payload[:2]
				}
				_ = writeWSFrame(w, wsClose, reply)
				return io.EOF
			}
		case wsText, wsBinary:
			if inMessage {
				return wsCloseWith(w, 1002, "new message inside a fragmented one")
			}
			msgOp, msg, inMessage = f.opcode, f.payload, true
		case wsContinuation:
			if !inMessage {
				return wsCloseWith(w, 1002, "continuation without a message")
			}
			if len(msg)+len(f.payload) > wsMaxMessage {
				return wsCloseWith(w, 1009, "message too big")
			}
			msg = append(msg, f.payload...)
		default:
			return wsCloseWith(w, 1002, fmt.Sprintf("unknown opcode %d", f.opcode))
		}
		if inMessage && f.fin && f.opcode <= wsBinary {
			inMessage = false
			if msgOp == wsText && !utf8.Valid(msg) {
				return wsCloseWith(w, 1007, "text message is not UTF-8")
			}
			if err := writeWSFrame(w, msgOp, msg); err != nil {
				return err
			}
			msg = nil
		}
	}
}
