// Command yamux_peer is the Go (hashicorp/yamux) side of socketmaster's yamux
// interoperability tests. It speaks a tiny line-based command protocol over
// yamux streams so that a C++ peer can drive it, or be driven by it.
//
// # Connection
//
//	-role client|server   yamux role on the TCP connection (stream IDs odd/even)
//	-listen ADDR          listen, print "ADDR host:port" on stdout, accept ONE conn
//	-connect ADDR         or dial ADDR
//
// Either role may open streams. The side that ACCEPTS a stream serves it.
//
// Other flags: -scenario NAME (default serve), -streams N (1), -bytes N
// (1048576), -seed N (1), -window N (yamux MaxStreamWindowSize, 262144),
// -keepalive (false), -timeout D (120s), -write-timeout D (yamux
// ConnectionWriteTimeout, 10s), -strict (serve fails if a stream handler failed).
//
// # Per-stream command protocol
//
// The opener first writes one ASCII line ending in "\n", then any payload:
//
//	ECHO <n>\n + n bytes   server echoes the n bytes back as they arrive, then Close (FIN)
//	SINK <n>\n + n bytes   server reads n bytes, replies "<crc32hex> <n>\n", Close
//	SEND <n> <seed>\n      server writes n bytes of gen(seed), Close
//	HALFCLOSE\n + bytes    server reads until the opener's FIN, replies "BYE <count>\n"
//	                       (count = payload bytes after the line), Close
//	PING\n                 server calls session.Ping(), replies "PONG <rtt ns>\n", Close
//	GOAWAY\n               server calls session.GoAway(), replies "OK\n", Close;
//	                       later opens by the remote are refused (RST) by yamux
//	HOLD\n                 server never reads payload again; keeps the stream open until
//	                       the stream is reset / FINed with nothing buffered, or the
//	                       session ends (lets the opener exhaust its send window)
//	SLOW <n>\n + n bytes   server reads n bytes in 4 KiB reads, replies
//	                       "<crc32hex> <n>\n", Close
//	anything else          server replies "ERR unknown\n", Close
//
// Errors in the server replies use "ERR <reason>\n". crc32 is CRC-32/IEEE as 8
// lowercase hex digits.
//
// # Data generator gen(seed) (see gen.go; the C++ side implements the same)
//
//	state uint32 = seed*2654435761 + 1; if state == 0 { state = 1 }
//	per 4-byte block: state ^= state<<13; state ^= state>>17; state ^= state<<5;
//	emit state little-endian. n bytes = first n bytes of that sequence.
//
// # Scenarios (-scenario)
//
//	serve        accept streams forever, serve each command in its own goroutine;
//	             "OK served=<count>" when the remote ends the session
//	echo         -streams concurrent ECHO streams of -bytes each, data gen(seed+i)
//	sink         one SINK of -bytes of gen(seed)
//	send         one SEND of -bytes with -seed, verified against gen(seed)
//	ping         session.Ping() 3 times
//	goaway-check GOAWAY, then verify a new stream is refused
//	slow, halfclose, hold, unknown   drive the remaining commands (self-tests)
//	bench, bench-tcp  in-process Go-vs-Go yamux / raw TCP throughput baselines
//	gen          print reference values of gen(seed) for -bytes bytes
//
// Drivers end the session gracefully: TCP half-close, wait (max 5 s) for the
// remote to close, then session.Close().
//
// Output: the last stdout line is "OK ..." (exit 0) or "FAIL <reason>" (exit 1);
// "FAIL timeout" with exit 3 when -timeout expires. Logs go to stderr.
//
// Build (GOPATH mode, offline):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=/tmp/gocache go build -o /tmp/yamux_peer .
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

var (
	flagRole      = flag.String("role", "client", "yamux role: client|server")
	flagListen    = flag.String("listen", "", "listen address (accepts exactly one connection)")
	flagConnect   = flag.String("connect", "", "address to dial")
	flagScenario  = flag.String("scenario", "serve", "serve|echo|sink|send|ping|goaway-check|slow|halfclose|hold|unknown|bench|bench-tcp|gen")
	flagStreams   = flag.Int("streams", 1, "number of streams")
	flagBytes     = flag.Int64("bytes", 1048576, "bytes per stream")
	flagSeed      = flag.Uint64("seed", 1, "generator seed (taken modulo 2^32)")
	flagWindow    = flag.Uint("window", 262144, "yamux MaxStreamWindowSize")
	flagKeepalive = flag.Bool("keepalive", false, "enable yamux keepalive pings")
	flagTimeout   = flag.Duration("timeout", 120*time.Second, "overall deadline")
	flagWriteTO   = flag.Duration("write-timeout", 10*time.Second, "yamux ConnectionWriteTimeout (also the Ping timeout)")
	flagStrict    = flag.Bool("strict", false, "serve: FAIL if any stream handler failed (e.g. the peer aborted a stream)")
	flagAcceptLag = flag.Duration("accept-lag", 0, "serve: let this long pass before the first AcceptStream (an application slow to accept)")
)

var (
	outMu    sync.Mutex
	finished bool
	logger   = log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)
)

// finish prints the final line and exits. Only the first caller wins; any
// concurrent caller blocks until the process is gone.
func finish(code int, line string) {
	outMu.Lock()
	if finished {
		select {}
	}
	finished = true
	fmt.Fprintln(os.Stdout, line)
	os.Stdout.Sync()
	os.Exit(code)
}

func fail(format string, a ...interface{}) {
	finish(1, "FAIL "+fmt.Sprintf(format, a...))
}

func ok(format string, a ...interface{}) {
	finish(0, "OK"+fmt.Sprintf(format, a...))
}

// println prints a non-final stdout line.
func println(line string) {
	outMu.Lock()
	defer outMu.Unlock()
	if finished {
		return
	}
	fmt.Fprintln(os.Stdout, line)
	os.Stdout.Sync()
}

func yamuxConfig() *yamux.Config {
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = *flagKeepalive
	cfg.MaxStreamWindowSize = uint32(*flagWindow)
	cfg.ConnectionWriteTimeout = *flagWriteTO
	cfg.LogOutput = nil
	cfg.Logger = log.New(os.Stderr, "yamux["+*flagRole+"] ", log.LstdFlags|log.Lmicroseconds)
	return cfg
}

func main() {
	flag.Parse()
	logger.SetPrefix("yamux_peer[" + *flagRole + "/" + *flagScenario + "] ")
	time.AfterFunc(*flagTimeout, func() { finish(3, "FAIL timeout") })

	if *flagStreams < 1 {
		fail("usage: -streams must be >= 1")
	}
	if *flagBytes < 0 {
		fail("usage: -bytes must be >= 0")
	}
	if uint64(*flagWindow) > 0xffffffff {
		fail("usage: -window too large")
	}

	switch *flagScenario {
	case "bench":
		runBenchYamux()
		return
	case "bench-tcp":
		runBenchTCP()
		return
	case "gen":
		runGen()
		return
	}

	if *flagRole != "client" && *flagRole != "server" {
		fail("usage: -role must be client or server")
	}
	if (*flagListen == "") == (*flagConnect == "") {
		fail("usage: exactly one of -listen or -connect is required")
	}
	// Validate the scenario before touching the network.
	driver, isDriver := drivers[*flagScenario]
	if !isDriver && *flagScenario != "serve" {
		fail("usage: unknown scenario %q", *flagScenario)
	}

	conn := establish()
	var sess *yamux.Session
	var err error
	if *flagRole == "client" {
		sess, err = yamux.Client(conn, yamuxConfig())
	} else {
		sess, err = yamux.Server(conn, yamuxConfig())
	}
	if err != nil {
		fail("yamux setup: %v", err)
	}

	if !isDriver {
		runServe(sess)
		return
	}
	result := driver(sess)
	closeSession(sess, conn)
	ok("%s", result)
}

func establish() net.Conn {
	if *flagListen != "" {
		ln, err := net.Listen("tcp", *flagListen)
		if err != nil {
			fail("listen: %v", err)
		}
		println("ADDR " + ln.Addr().String())
		conn, err := ln.Accept()
		ln.Close()
		if err != nil {
			fail("accept: %v", err)
		}
		return conn
	}
	conn, err := net.Dial("tcp", *flagConnect)
	if err != nil {
		fail("connect: %v", err)
	}
	return conn
}

// closeSession ends a driver's session gracefully: half-close TCP so the
// remote's reader sees EOF, wait for the remote to close its side (so no
// unread bytes are left that would turn our close into a RST), then Close.
// hashicorp/yamux (this version) sends no GoAway on Close.
func closeSession(sess *yamux.Session, conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		if err := tc.CloseWrite(); err == nil {
			select {
			case <-sess.CloseChan():
			case <-time.After(5 * time.Second):
				logger.Printf("remote did not close the connection within 5s after our FIN")
			}
		}
	}
	sess.Close()
}

// runGen prints reference values of the generator for cross-checking.
func runGen() {
	g := newGen(uint32(*flagSeed))
	head := make([]byte, 16)
	g.Fill(head)
	g = newGen(uint32(*flagSeed))
	crc, err := crcOfGen(g, *flagBytes)
	if err != nil {
		fail("%v", err)
	}
	println(fmt.Sprintf("GEN seed=%d head=%x bytes=%d crc=%08x", uint32(*flagSeed), head, *flagBytes, crc))
	ok("")
}

func crcOfGen(g *gen, n int64) (uint32, error) {
	h := newCRC()
	buf := make([]byte, 64*1024)
	for n > 0 {
		k := int64(len(buf))
		if n < k {
			k = n
		}
		g.Fill(buf[:k])
		h.Write(buf[:k])
		n -= k
	}
	return h.Sum32(), nil
}
