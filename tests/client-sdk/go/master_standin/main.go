// Command master_standin is an independent stand-in for the socketmaster master, built only from
// the Go reference stack (hashicorp/yamux, the `capnp` tool): it accepts one service on its control
// port, decodes the service's HandshakeRequest with `capnp decode`, answers with a HandshakeResponse
// made by `capnp encode`, then becomes the yamux CLIENT on that connection, as the master does, and
// opens streams that each start with a PROXY v2 header.
//
// What it then checks (-streams, -echo-bytes, -bulk): that many concurrent streams, each sending
// "ECHO <n>\n" and n bytes of its own and expecting "from <the PROXY source>\n", the same bytes
// back and the service's FIN; and one stream sending "BULK <n>\n" and expecting exactly n generated
// bytes (seed 0), then FIN. With -reject it answers `rejected` with that code instead and stops.
//
// Build (offline, no go.mod): GO111MODULE=off GOPATH=/usr/share/gocode go build .
//
// Stdout carries only these lines:
//
//	control <addr>        listening; the service may connect
//	request <text>        the decoded HandshakeRequest (the token is shown as <n bytes>)
//	OK <summary>          everything checked out (exit 0)
//	FAIL <reason>         something did not (exit 1; exit 3 after -timeout)
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

var (
	control     = flag.String("control", "127.0.0.1:0", "address to listen on for the one service")
	schema      = flag.String("schema", "", "path of protocol/socketmaster.capnp")
	expectToken = flag.String("expect-token", "", "the token the service must present")
	streams     = flag.Int("streams", 1000, "concurrent echo streams")
	echoBytes   = flag.Int("echo-bytes", 16384, "bytes each echo stream sends")
	bulk        = flag.Int64("bulk", 64<<20, "bytes the BULK stream expects (0: no bulk stream)")
	reject      = flag.String("reject", "", "answer rejected with this Rejected.Code (e.g. badCertificate)")
	rejectMsg   = flag.String("reject-message", "stand-in says no", "the Rejected.message for -reject")
	bound       = flag.String("bound", "127.0.0.1:4242", "the boundAddress to report")
	timeout     = flag.Duration("timeout", 120*time.Second, "give up (FAIL timeout, exit 3) after this")
)

var stdout sync.Mutex

func line(format string, args ...any) {
	stdout.Lock()
	defer stdout.Unlock()
	fmt.Printf(format+"\n", args...)
}

func fail(format string, args ...any) {
	line("FAIL "+format, args...)
	os.Exit(1)
}

func main() {
	flag.Parse()
	log.SetPrefix("master_standin: ")
	time.AfterFunc(*timeout, func() {
		line("FAIL timeout")
		os.Exit(3)
	})
	ln, err := net.Listen("tcp", *control)
	if err != nil {
		fail("listen: %v", err)
	}
	line("control %s", ln.Addr())
	conn, err := ln.Accept()
	if err != nil {
		fail("accept: %v", err)
	}
	ln.Close() // one service only: a reconnect attempt is refused

	msg, err := readFrame(conn, 1<<20)
	if err != nil {
		fail("handshake: %v", err)
	}
	text, err := decodeRequest(*schema, msg)
	if err != nil {
		fail("decode: %v", err)
	}
	line("request %s", redactToken(text))
	if err := checkRequest(text); err != nil {
		fail("request: %v", err)
	}

	if *reject != "" {
		answer, err := encodeResponse(*schema, fmt.Sprintf("(rejected = (code = %s, message = %s))", *reject, quote(*rejectMsg)))
		if err != nil {
			fail("encode: %v", err)
		}
		if _, err := conn.Write(answer); err != nil {
			fail("write rejection: %v", err)
		}
		conn.Close()
		line("OK rejected %s", *reject)
		return
	}
	answer, err := encodeResponse(*schema, fmt.Sprintf("(accepted = (registrationId = 77, boundAddress = %s))", quote(*bound)))
	if err != nil {
		fail("encode: %v", err)
	}
	if _, err := conn.Write(answer); err != nil {
		fail("write answer: %v", err)
	}

	cfg := yamux.DefaultConfig()
	cfg.MaxStreamWindowSize = 4 << 20
	cfg.LogOutput = os.Stderr
	session, err := yamux.Client(conn, cfg)
	if err != nil {
		fail("yamux: %v", err)
	}
	dst, _ := net.ResolveTCPAddr("tcp", *bound)

	var wg sync.WaitGroup
	var echoed atomic.Int64
	errs := make(chan error, *streams+1)
	for i := 0; i < *streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			n, err := echoStream(session, i, dst)
			echoed.Add(n)
			if err != nil {
				errs <- fmt.Errorf("stream %d: %v", i, err)
			}
		}(i)
	}
	if *bulk > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := bulkStream(session, dst); err != nil {
				errs <- fmt.Errorf("bulk: %v", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fail("%v", err)
	}
	session.Close()
	line("OK streams=%d echoed=%d bulk=%d", *streams, echoed.Load(), *bulk)
}

var (
	versionRe = regexp.MustCompile(`\bversion = 1\b`)
	proxyRe   = regexp.MustCompile(`\bproxyProtocol = true\b`)
	tokenRe   = regexp.MustCompile(`token = "((?:[^"\\]|\\.)*)"`)
)

func redactToken(text string) string {
	return tokenRe.ReplaceAllStringFunc(text, func(m string) string {
		return fmt.Sprintf("token = <%d bytes>", len(tokenRe.FindStringSubmatch(m)[1]))
	})
}

func checkRequest(text string) error {
	if !versionRe.MatchString(text) {
		return fmt.Errorf("not version 1: %s", text)
	}
	if !proxyRe.MatchString(text) {
		return fmt.Errorf("the SDK did not ask for PROXY headers: %s", text)
	}
	got := ""
	if m := tokenRe.FindStringSubmatch(text); m != nil {
		got = m[1]
	}
	if got != *expectToken {
		return fmt.Errorf("token of %d bytes, expected %d bytes", len(got), len(*expectToken))
	}
	return nil
}

// source is the made-up public client of stream i, carried by its PROXY header.
func source(i int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(192, 0, 2, byte(1+i%250)), Port: 10000 + i}
}

// echoStream: "ECHO <n>\n" and n generated bytes; expects "from <source>\n", the same n bytes and
// the service's FIN. This hashicorp/yamux has no half-close that keeps reading (Read returns EOF as
// soon as we have closed our side and nothing is buffered), so the stream is closed only at the end.
func echoStream(session *yamux.Session, i int, dst *net.TCPAddr) (int64, error) {
	st, err := session.OpenStream()
	if err != nil {
		return 0, fmt.Errorf("open: %v", err)
	}
	defer st.Close()
	src := source(i)
	payload := make([]byte, *echoBytes)
	newGen(uint64(i + 1)).Fill(payload)
	werr := make(chan error, 1)
	go func() {
		msg := append(proxyV2(src, dst), []byte(fmt.Sprintf("ECHO %d\n", len(payload)))...)
		_, err := st.Write(append(msg, payload...))
		werr <- err
	}()
	r := bufio.NewReader(st)
	greeting, err := r.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("reading the greeting: %v", err)
	}
	if want := "from " + src.String() + "\n"; greeting != want {
		return 0, fmt.Errorf("greeting %q, want %q", greeting, want)
	}
	back := make([]byte, len(payload))
	if n, err := io.ReadFull(r, back); err != nil {
		return int64(n), fmt.Errorf("reading the echo after %d of %d bytes: %v", n, len(payload), err)
	}
	if err := <-werr; err != nil {
		return int64(len(back)), fmt.Errorf("write: %v", err)
	}
	if !bytes.Equal(back, payload) {
		return int64(len(back)), fmt.Errorf("the echo differs from the %d bytes sent", len(payload))
	}
	if n, err := r.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return int64(len(back)), fmt.Errorf("after the echo: %d more bytes, %v (want the service's FIN)", n, err)
	}
	return int64(len(back)), nil
}

func bulkStream(session *yamux.Session, dst *net.TCPAddr) error {
	st, err := session.OpenStream()
	if err != nil {
		return fmt.Errorf("open: %v", err)
	}
	defer st.Close()
	msg := append(proxyV2(source(*streams), dst), []byte("BULK "+strconv.FormatInt(*bulk, 10)+"\n")...)
	if _, err := st.Write(msg); err != nil {
		return fmt.Errorf("write: %v", err)
	}
	g := newGen(0)
	buf := make([]byte, 256<<10)
	want := make([]byte, len(buf))
	var total int64
	for {
		n, err := st.Read(buf)
		if n > 0 {
			g.Fill(want[:n])
			if !bytes.Equal(buf[:n], want[:n]) {
				return fmt.Errorf("bytes %d..%d differ from the generator", total, total+int64(n))
			}
			total += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read after %d bytes: %v", total, err)
		}
	}
	if total != *bulk {
		return fmt.Errorf("%d bytes, want %d", total, *bulk)
	}
	return nil
}
