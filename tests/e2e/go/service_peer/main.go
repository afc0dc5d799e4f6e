// Command service_peer is an independent socketmaster service built only from the Go reference
// stack (hashicorp/yamux, net/http, the `capnp` tool): it registers with a master over the
// control connection, then serves the public connections the master forwards as yamux streams.
//
// Build (offline, no go.mod):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=/tmp/gocache go build -o /tmp/service_peer .
//
// Stdout carries only these lines (stderr carries diagnostics):
//
//	CONNECTED                                  (-hold-handshake) connected to the master; the
//	                                           request goes when SIGUSR1 comes
//	ACCEPTED <registrationId> <boundAddress>   registration live; serving
//	GOAWAY                                     (-goaway-after or a signal) the GoAway frame has been
//	                                           written to the master; then one of:
//	CLOSED                                     the master closed the connection (exit 0)
//	DRAINED                                    SIGTERM/SIGINT: GoAway, in-flight work done (exit 0)
//	REJECTED <code> <message>                  registration refused (exit 2)
//	FAIL timeout                               -timeout elapsed (exit 3)
//	FAIL <reason>                              any other failure (exit 1)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// out serialises stdout lines; the first final line wins and ends the process.
type output struct {
	mu       sync.Mutex
	finished bool
	stdout   io.Writer
	stderr   io.Writer
}

var out = &output{stdout: os.Stdout, stderr: os.Stderr}

func (o *output) line(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.finished {
		fmt.Fprintln(o.stdout, s)
	}
}

// finish prints the final line and exits; later calls (from racing goroutines) block forever.
func (o *output) finish(code int, s string) {
	o.mu.Lock()
	if o.finished {
		o.mu.Unlock()
		select {}
	}
	o.finished = true
	fmt.Fprintln(o.stdout, oneLine(s))
	os.Exit(code)
}

func (o *output) logf(format string, args ...interface{}) {
	fmt.Fprintf(o.stderr, "service_peer: "+format+"\n", args...)
}

// oneLine keeps a message from a peer on a single stdout line.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

func fail(format string, args ...interface{}) {
	out.finish(1, "FAIL "+fmt.Sprintf(format, args...))
}

type config struct {
	master        string
	token         string
	port          int
	address       string
	domain        string
	path          string
	tcp           bool
	proxyProtocol bool
	tlsCert       string
	tlsKey        string
	text          string
	mode          string
	goawayAfter   time.Duration
	timeout       time.Duration
	schema        string
	capnp         string
	version       uint
	holdHandshake bool
}

func parseFlags(args []string) config {
	var c config
	fs := flag.NewFlagSet("service_peer", flag.ExitOnError)
	fs.StringVar(&c.master, "master", "", "master control address host:port (required)")
	fs.StringVar(&c.token, "token", "", "shared secret sent in the handshake")
	fs.IntVar(&c.port, "port", 0, "public port to ask for (0 = the master picks)")
	fs.StringVar(&c.address, "address", "", "public interface to ask for (empty = all)")
	fs.StringVar(&c.domain, "domain", "", "HTTP route: Host suffix")
	fs.StringVar(&c.path, "path", "", "HTTP route: path prefix")
	fs.BoolVar(&c.tcp, "tcp", false, "raw TCP registration (no http route)")
	fs.BoolVar(&c.proxyProtocol, "proxy-protocol", false, "ask for a PROXY v2 header on every stream and strip it")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM certificate chain file for the master to terminate TLS with")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM private key file matching -tls-cert")
	fs.StringVar(&c.text, "text", "hello from go", "first line of the default HTTP answer")
	fs.StringVar(&c.mode, "mode", "http", "http or echo")
	fs.DurationVar(&c.goawayAfter, "goaway-after", 0, "send a yamux GoAway after this long (0 = never)")
	fs.DurationVar(&c.timeout, "timeout", 120*time.Second, "overall limit; then print FAIL timeout and exit 3")
	fs.StringVar(&c.schema, "schema", "/work/main/protocol/socketmaster.capnp", "socketmaster.capnp path")
	fs.StringVar(&c.capnp, "capnp", "capnp", "the capnp tool")
	fs.UintVar(&c.version, "proto-version", 1, "HandshakeRequest.version to send (tests of rejection)")
	fs.BoolVar(&c.holdHandshake, "hold-handshake", false,
		"connect, print CONNECTED, and send the request only on SIGUSR1 (a handshake the master sees begin before an event)")
	_ = fs.Parse(args)
	if fs.NArg() != 0 {
		fail("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if c.master == "" {
		fail("-master is required")
	}
	if c.mode != "http" && c.mode != "echo" {
		fail("-mode must be http or echo, not %q", c.mode)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		fail("-tls-cert and -tls-key go together")
	}
	if c.port < 0 || c.port > 65535 {
		fail("-port %d out of range", c.port)
	}
	if c.timeout <= 0 {
		fail("-timeout must be positive")
	}
	return c
}

func main() {
	c := parseFlags(os.Args[1:])
	start := time.Now()
	deadline := start.Add(c.timeout)
	time.AfterFunc(c.timeout, func() { out.finish(3, "FAIL timeout") })

	opts := requestOptions{
		Version: c.version, Token: c.token, Address: c.address, Port: c.port,
		HTTP: !c.tcp, DomainSuffix: c.domain, PathPrefix: c.path, ProxyProtocol: c.proxyProtocol,
	}
	if c.tlsCert != "" {
		cert, err := os.ReadFile(c.tlsCert)
		if err != nil {
			fail("reading -tls-cert: %v", err)
		}
		key, err := os.ReadFile(c.tlsKey)
		if err != nil {
			fail("reading -tls-key: %v", err)
		}
		opts.TLS, opts.CertChainPem, opts.PrivateKeyPem = true, string(cert), string(key)
	}
	req, err := encodeRequest(c.capnp, c.schema, requestText(opts))
	if err != nil {
		fail("encoding the request: %v", err)
	}

	var resume chan os.Signal
	if c.holdHandshake {
		resume = make(chan os.Signal, 1)
		signal.Notify(resume, syscall.SIGUSR1) // before CONNECTED: the signal must not find its default action
	}
	conn, err := net.DialTimeout("tcp", c.master, time.Until(deadline))
	if err != nil {
		fail("connecting to the master: %v", err)
	}
	if resume != nil {
		out.line("CONNECTED")
		<-resume
		signal.Stop(resume)
	}
	_ = conn.SetDeadline(deadline)
	if _, err := conn.Write(req); err != nil {
		fail("sending the request: %v", err)
	}
	frame, err := readFrame(conn, maxResponseBytes)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			out.finish(3, "FAIL timeout")
		}
		fail("reading the response: %v", err)
	}
	text, err := decodeText(c.capnp, c.schema, "HandshakeResponse", frame)
	if err != nil {
		fail("decoding the response: %v", err)
	}
	out.logf("handshake response: %s", text)
	res, err := interpretResponse(text)
	if err != nil {
		fail("%v", err)
	}
	if !res.Accepted {
		conn.Close()
		out.finish(2, strings.TrimRight(fmt.Sprintf("REJECTED %s %s", res.Code, res.Message), " "))
	}
	_ = conn.SetDeadline(time.Time{})

	ycfg := yamux.DefaultConfig()
	ycfg.LogOutput = os.Stderr
	sess, err := yamux.Server(conn, ycfg)
	if err != nil {
		fail("starting yamux: %v", err)
	}
	out.line(fmt.Sprintf("ACCEPTED %s %s", res.RegistrationID, oneLine(res.BoundAddress)))

	ln := newStreamListener(sess, c.proxyProtocol, out.logf)
	var srv *http.Server
	var handler *app
	var echoWork tracker
	echoLoopDone := make(chan struct{})
	if c.mode == "http" {
		handler = &app{text: c.text, logf: out.logf}
		srv = &http.Server{Handler: handler, ErrorLog: log.New(os.Stderr, "service_peer http: ", 0),
			ConnContext: handler.connContext}
		go func() { _ = srv.Serve(ln) }()
	} else {
		go func() {
			defer close(echoLoopDone)
			for {
				s, err := ln.Accept()
				if err != nil {
					return
				}
				echoWork.add()
				go func(s net.Conn) {
					defer echoWork.done()
					defer s.Close()
					if _, err := io.Copy(s, s); err != nil {
						out.logf("echo stream: %v", err)
					}
				}(s)
			}
		}()
	}

	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	var goaway <-chan time.Time
	if c.goawayAfter > 0 {
		goaway = time.After(c.goawayAfter)
	}
	for {
		select {
		case <-sess.CloseChan():
			out.finish(0, "CLOSED")
		case <-goaway:
			goaway = nil
			if err := sess.GoAway(); err != nil {
				out.logf("GoAway: %v", err)
			} else {
				out.line("GOAWAY")
			}
			if srv != nil {
				// Open keep-alive connections end after their current response.
				srv.SetKeepAlivesEnabled(false)
			}
			out.logf("sent GoAway")
		case sig := <-sigc:
			out.logf("%v: draining", sig)
			if err := sess.GoAway(); err != nil {
				out.logf("GoAway: %v", err)
			} else {
				// Written, not merely queued: a test can wait for this line, then expect the master
				// to treat this service as draining.
				out.line("GOAWAY")
			}
			drainBy := time.Now().Add(10 * time.Second)
			if srv != nil {
				ctx, cancel := context.WithDeadline(context.Background(), drainBy)
				if err := srv.Shutdown(ctx); err != nil {
					out.logf("http shutdown: %v", err)
				}
				cancel()
				if !handler.ws.wait(drainBy) {
					out.logf("websockets still open at the drain bound")
				}
			} else {
				ln.Close()
				<-echoLoopDone
				if !echoWork.wait(drainBy) {
					out.logf("echo streams still open at the drain bound")
				}
			}
			sess.Close()
			out.finish(0, "DRAINED")
		}
	}
}
