package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// The end-to-end tests run this test binary as the service (TestMain turns into main() when
// SERVICE_PEER_AS_MAIN=1) against a fake master written here with the capnp tool and yamux.

func TestMain(m *testing.M) {
	if os.Getenv("SERVICE_PEER_AS_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

type child struct {
	cmd    *exec.Cmd
	stdout *bufio.Reader
	stderr *bytes.Buffer
	lines  chan string
	done   chan struct{}
	err    error
}

func startChild(t *testing.T, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "SERVICE_PEER_AS_MAIN=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, stderr: &bytes.Buffer{}, lines: make(chan string, 16), done: make(chan struct{})}
	cmd.Stderr = &lockedWriter{w: c.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("child stderr:\n%s", c.stderr.String())
		}
	})
	return c
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (c *child) line(t *testing.T, within time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok {
			t.Fatalf("child stdout closed, waiting for a line")
		}
		return l
	case <-time.After(within):
		t.Fatalf("no stdout line within %v", within)
	}
	return ""
}

func (c *child) exitCode(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(within):
		t.Fatalf("child still running after %v", within)
	}
	if c.err == nil {
		return 0
	}
	if ee, ok := c.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("child: %v", c.err)
	return -1
}

// fakeMaster listens on loopback and hands over the first control connection.
type fakeMaster struct {
	ln   net.Listener
	conn chan net.Conn
}

func newFakeMaster(t *testing.T) *fakeMaster {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMaster{ln: ln, conn: make(chan net.Conn, 1)}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			m.conn <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return m
}

func (m *fakeMaster) addr() string { return m.ln.Addr().String() }

// handshake reads the request, checks its decoded text, and answers with responseText.
func (m *fakeMaster) handshake(t *testing.T, wantRequest, responseText string) net.Conn {
	t.Helper()
	var conn net.Conn
	select {
	case conn = <-m.conn:
	case <-time.After(10 * time.Second):
		t.Fatal("the service did not connect")
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	frame, err := readFrame(conn, 1<<20)
	if err != nil {
		t.Fatalf("reading the request: %v", err)
	}
	got, err := decodeText("capnp", testSchema, "HandshakeRequest", frame)
	if err != nil {
		t.Fatal(err)
	}
	if got != wantRequest {
		t.Fatalf("request decodes to\n  %s\nwant\n  %s", got, wantRequest)
	}
	resp, err := runCapnp("capnp", []byte(responseText+"\n"), "encode", testSchema, "HandshakeResponse")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(resp); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn
}

const acceptedText = `(accepted = (registrationId = 7, boundAddress = "127.0.0.1:1"))`

func requireCapnp(t *testing.T) {
	if _, err := exec.LookPath("capnp"); err != nil {
		t.Skip("capnp not installed")
	}
}

func yamuxClient(t *testing.T, conn net.Conn) *yamux.Session {
	t.Helper()
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	s, err := yamux.Client(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func get(t *testing.T, br *bufio.Reader, w io.Writer, path string, extra string) (*http.Response, string) {
	t.Helper()
	if _, err := fmt.Fprintf(w, "GET %s HTTP/1.1\r\nHost: svc.test\r\n%s\r\n", path, extra); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s body: %v", path, err)
	}
	return resp, string(body)
}

func TestE2EAcceptedHTTP(t *testing.T) {
	requireCapnp(t)
	m := newFakeMaster(t)
	c := startChild(t, "-master", m.addr(), "-path", "/a", "-domain", ".test", "-port", "8000",
		"-token", "s3cret", "-text", "hi there", "-timeout", "30s")
	conn := m.handshake(t,
		`(version = 1, token = "s3cret", socket = (port = 8000, http = (domainSuffix = ".test", pathPrefix = "/a"), proxyProtocol = false))`,
		acceptedText)
	if l := c.line(t, 10*time.Second); l != "ACCEPTED 7 127.0.0.1:1" {
		t.Fatalf("first line %q", l)
	}
	sess := yamuxClient(t, conn)

	st, err := sess.Open()
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(st)
	resp, body := get(t, br, st, "/a/hello?q=1", "X-Forwarded-For: 198.51.100.9\r\n")
	wantBody := fmt.Sprintf("hi there\npath: /a/hello\nclient: %s\nxff: 198.51.100.9\n", conn.LocalAddr())
	if resp.StatusCode != 200 || body != wantBody {
		t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, wantBody)
	}
	// Keep-alive: the same stream carries the next requests.
	resp, body = get(t, br, st, "/a/bytes/100000", "")
	if resp.StatusCode != 200 || resp.ContentLength != 100000 || body != strings.Repeat("x", 100000) {
		t.Fatalf("bytes: %d len %d cl %d", resp.StatusCode, len(body), resp.ContentLength)
	}
	resp, body = get(t, br, st, "/slow?ms=50", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "hi there\npath: /slow\n") {
		t.Fatalf("slow: %d %q", resp.StatusCode, body)
	}
	if _, err := fmt.Fprintf(st, "POST /echo-body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "hello" {
		t.Fatalf("echo-body: %q", b)
	}
	st.Close()

	// Several concurrent streams.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s, err := sess.Open()
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			_ = s.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(s, "GET /bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 1000*i)
			sbr := bufio.NewReader(s)
			resp, err := http.ReadResponse(sbr, nil)
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			if err != nil || len(b) != 1000*i {
				errs <- fmt.Errorf("stream %d: %d bytes, %v", i, len(b), err)
				return
			}
			// Connection: close -> the service ends the stream after the response.
			if rest, err := io.ReadAll(sbr); err != nil || len(rest) != 0 {
				errs <- fmt.Errorf("stream %d: after the response %q, %v (want EOF)", i, rest, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// WebSocket echo.
	ws, err := sess.Open()
	if err != nil {
		t.Fatal(err)
	}
	_ = ws.SetDeadline(time.Now().Add(10 * time.Second))
	keyRaw := make([]byte, 16)
	_, _ = rand.Read(keyRaw)
	key := base64.StdEncoding.EncodeToString(keyRaw)
	fmt.Fprintf(ws, "GET /a/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	wbr := bufio.NewReader(ws)
	resp, err = http.ReadResponse(wbr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) {
		t.Fatalf("upgrade: %d %v", resp.StatusCode, resp.Header)
	}
	ws.Write(maskedFrame(true, wsText, []byte("ping me")))
	ws.Write(maskedFrame(true, wsPing, []byte("pp")))
	ws.Write(maskedFrame(true, wsClose, []byte{0x03, 0xe8}))
	for _, want := range []struct {
		op byte
		p  string
	}{{wsText, "ping me"}, {wsPong, "pp"}, {wsClose, "\x03\xe8"}} {
		f, err := readWSFrame(wbr, 1<<20)
		if err != nil || f.opcode != want.op || string(f.payload) != want.p {
			t.Fatalf("ws frame: %+v %v, want op %d %q", f, err, want.op, want.p)
		}
	}
	ws.Close()

	// The master closes the connection: the service says CLOSED and exits 0.
	sess.Close()
	if l := c.line(t, 10*time.Second); l != "CLOSED" {
		t.Fatalf("after close: %q", l)
	}
	if code := c.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestE2EProxyProtocolHTTP(t *testing.T) {
	requireCapnp(t)
	m := newFakeMaster(t)
	c := startChild(t, "-master", m.addr(), "-proxy-protocol", "-timeout", "30s")
	conn := m.handshake(t,
		`(version = 1, token = "", socket = (port = 0, http = (domainSuffix = "", pathPrefix = ""), proxyProtocol = true))`,
		acceptedText)
	if l := c.line(t, 10*time.Second); l != "ACCEPTED 7 127.0.0.1:1" {
		t.Fatalf("first line %q", l)
	}
	sess := yamuxClient(t, conn)
	for _, src := range []*net.TCPAddr{
		{IP: net.ParseIP("203.0.113.5"), Port: 4242},
		{IP: net.ParseIP("2001:db8::7"), Port: 1},
	} {
		st, err := sess.Open()
		if err != nil {
			t.Fatal(err)
		}
		_ = st.SetDeadline(time.Now().Add(10 * time.Second))
		dst := &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 80}
		if src.IP.To4() == nil {
			dst.IP = net.ParseIP("2001:db8::1")
		}
		st.Write(proxyV2(src, dst, nil))
		_, body := get(t, bufio.NewReader(st), st, "/who", "")
		if !strings.Contains(body, "\nclient: "+src.String()+"\n") {
			t.Fatalf("body %q lacks client %s", body, src)
		}
		st.Close()
	}
	sess.Close()
	if l := c.line(t, 10*time.Second); l != "CLOSED" {
		t.Fatalf("after close: %q", l)
	}
}

func TestE2EEchoTCPWithProxy(t *testing.T) {
	requireCapnp(t)
	m := newFakeMaster(t)
	c := startChild(t, "-master", m.addr(), "-mode", "echo", "-tcp", "-proxy-protocol",
		"-address", "127.0.0.1", "-port", "9000", "-timeout", "30s")
	conn := m.handshake(t,
		`(version = 1, token = "", socket = (address = "127.0.0.1", port = 9000, proxyProtocol = true))`,
		`(accepted = (registrationId = 42, boundAddress = "127.0.0.1:9000"))`)
	if l := c.line(t, 10*time.Second); l != "ACCEPTED 42 127.0.0.1:9000" {
		t.Fatalf("first line %q", l)
	}
	sess := yamuxClient(t, conn)
	st, err := sess.Open()
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	payload := bytes.Repeat([]byte("0123456789"), 50000) // beyond one 256 KiB window
	go func() {
		st.Write(proxyV2(&net.TCPAddr{IP: net.IP{10, 0, 0, 1}, Port: 5}, &net.TCPAddr{IP: net.IP{10, 0, 0, 2}, Port: 6}, nil))
		st.Write(payload)
	}()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(st, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("echo differs")
	}
	// This yamux version returns EOF from Read right after a local Close, so the echo is read
	// in full before closing; the service then sees EOF and closes its side.
	st.Close()
	sess.Close()
	if l := c.line(t, 10*time.Second); l != "CLOSED" {
		t.Fatalf("after close: %q", l)
	}
}

func TestE2ERejected(t *testing.T) {
	requireCapnp(t)
	m := newFakeMaster(t)
	c := startChild(t, "-master", m.addr(), "-tcp", "-port", "8000", "-timeout", "30s")
	m.handshake(t, `(version = 1, token = "", socket = (port = 8000, proxyProtocol = false))`,
		`(rejected = (code = conflict, message = "port 8000 is \"taken\"\nby another service"))`)
	if l := c.line(t, 10*time.Second); l != `REJECTED conflict port 8000 is "taken" by another service` {
		t.Fatalf("line %q", l)
	}
	if code := c.exitCode(t, 10*time.Second); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
}

func TestE2EDrainOnSIGTERM(t *testing.T) {
	requireCapnp(t)
	m := newFakeMaster(t)
	c := startChild(t, "-master", m.addr(), "-timeout", "30s")
	conn := m.handshake(t,
		`(version = 1, token = "", socket = (port = 0, http = (domainSuffix = "", pathPrefix = ""), proxyProtocol = false))`,
		acceptedText)
	c.line(t, 10*time.Second)
	sess := yamuxClient(t, conn)
	st, err := sess.Open()
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(st, "GET /slow?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The GoAway arrives: the master may not open new streams.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := sess.Open()
		if err == yamux.ErrRemoteGoAway {
			break
		}
		if err == nil {
			s.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no GoAway: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The in-flight request still completes.
	resp, err := http.ReadResponse(bufio.NewReader(st), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello from go\n") {
		t.Fatalf("slow: %d %q", resp.StatusCode, body)
	}
	if l := c.line(t, 15*time.Second); l != "GOAWAY" {
		t.Fatalf("line %q, want GOAWAY", l)
	}
	if l := c.line(t, 15*time.Second); l != "DRAINED" {
		t.Fatalf("line %q", l)
	}
	if code := c.exitCode(t, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if el := time.Since(start); el < 1000*time.Millisecond || el > 5*time.Second {
		t.Fatalf("drained after %v; want after the slow request (~1.2 s), well before the 10 s bound", el)
	}
	// The service closed the control connection.
	select {
	case <-sess.CloseChan():
	case <-time.After(5 * time.Second):
		t.Fatal("session still open after DRAINED")
	}
}

func TestE2EGoAwayAfter(t *testing.T) {
	requireCapnp(t)
	m := newFakeMaster(t)
	c := startChild(t, "-master", m.addr(), "-mode", "echo", "-tcp", "-goaway-after", "300ms", "-timeout", "30s")
	conn := m.handshake(t, `(version = 1, token = "", socket = (port = 0, proxyProtocol = false))`, acceptedText)
	c.line(t, 10*time.Second)
	sess := yamuxClient(t, conn)
	st, err := sess.Open()
	if err != nil {
		t.Fatal(err)
	}
	_ = st.SetDeadline(time.Now().Add(10 * time.Second))
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := sess.Open()
		if err == yamux.ErrRemoteGoAway {
			break
		}
		if err == nil {
			s.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no GoAway: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The stream opened before the GoAway still works.
	st.Write([]byte("still here"))
	got := make([]byte, 10)
	if _, err := io.ReadFull(st, got); err != nil || string(got) != "still here" {
		t.Fatalf("%q %v", got, err)
	}
	st.Close()
	sess.Close()
	if l := c.line(t, 10*time.Second); l != "GOAWAY" {
		t.Fatalf("line %q, want GOAWAY", l)
	}
	if l := c.line(t, 10*time.Second); l != "CLOSED" {
		t.Fatalf("line %q", l)
	}
}

func TestE2ETimeout(t *testing.T) {
	requireCapnp(t)
	m := newFakeMaster(t)
	c := startChild(t, "-master", m.addr(), "-timeout", "500ms")
	// Accept and never answer.
	select {
	case conn := <-m.conn:
		defer conn.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no connection")
	}
	if l := c.line(t, 10*time.Second); l != "FAIL timeout" {
		t.Fatalf("line %q", l)
	}
	if code := c.exitCode(t, 10*time.Second); code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
}

func TestE2ETLSFieldsSent(t *testing.T) {
	requireCapnp(t)
	dir := t.TempDir()
	cert := "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	key := "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n"
	os.WriteFile(dir+"/c.pem", []byte(cert), 0o600)
	os.WriteFile(dir+"/k.pem", []byte(key), 0o600)
	m := newFakeMaster(t)
	c := startChild(t, "-master", m.addr(), "-tls-cert", dir+"/c.pem", "-tls-key", dir+"/k.pem",
		"-proto-version", "2", "-timeout", "30s")
	m.handshake(t,
		`(version = 2, token = "", socket = (port = 0, http = (domainSuffix = "", pathPrefix = ""), `+
			`tls = (certificateChainPem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", `+
			`privateKeyPem = "-----BEGIN PRIVATE KEY-----\nBBBB\n-----END PRIVATE KEY-----\n"), proxyProtocol = false))`,
		`(rejected = (code = unsupportedVersion, message = "version 2"))`)
	if l := c.line(t, 10*time.Second); l != "REJECTED unsupportedVersion version 2" {
		t.Fatalf("line %q", l)
	}
	if code := c.exitCode(t, 10*time.Second); code != 2 {
		t.Fatalf("exit %d", code)
	}
}
