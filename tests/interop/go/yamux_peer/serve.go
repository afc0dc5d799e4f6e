package main

import (
	"bufio"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

func newCRC() hash.Hash32 { return crc32.NewIEEE() }

// runServe accepts streams until the session ends and serves each one.
func runServe(sess *yamux.Session) {
	var served, failed int64
	var wg sync.WaitGroup
	var acceptErr error
	if *flagAcceptLag > 0 {
		// An application that is slow to start accepting: incoming SYNs pile up in the session's
		// accept backlog (256) meanwhile, so a burst beyond it is refused whatever the peer's speed.
		<-time.After(*flagAcceptLag)
	}
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			acceptErr = err
			break
		}
		served++
		wg.Add(1)
		go func(st *yamux.Stream) {
			defer wg.Done()
			if err := serveStream(sess, st); err != nil {
				atomic.AddInt64(&failed, 1)
				logger.Printf("stream %d: %v", st.StreamID(), err)
			}
		}(st)
	}
	sess.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		logger.Printf("some stream handlers still running 10s after session end")
	}
	logger.Printf("session ended: %v (served=%d, handler errors=%d)", acceptErr, served, atomic.LoadInt64(&failed))
	if !cleanSessionEnd(acceptErr) {
		fail("session error: %v (served=%d)", acceptErr, served)
	}
	if n := atomic.LoadInt64(&failed); *flagStrict && n > 0 {
		fail("handler errors=%d (served=%d)", n, served)
	}
	ok(" served=%d", served)
}

// cleanSessionEnd tells whether the session ended because the remote closed
// the connection (EOF, or RST / EPIPE racing with our last window updates),
// as opposed to a yamux protocol error.
func cleanSessionEnd(err error) bool {
	return err == nil || err == io.EOF || err == yamux.ErrSessionShutdown ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// readCmd reads the command line. Bytes bufio buffers after it are payload,
// so the caller must keep reading through br.
func readCmd(br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return "", fmt.Errorf("command line too long")
		}
		return "", fmt.Errorf("reading command line: %v", err)
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

func parseCount(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad count %q", s)
	}
	return n, nil
}

func reply(st *yamux.Stream, format string, a ...interface{}) error {
	_, err := st.Write([]byte(fmt.Sprintf(format, a...)))
	if err != nil {
		return fmt.Errorf("writing reply: %v", err)
	}
	return nil
}

func serveStream(sess *yamux.Session, st *yamux.Stream) (err error) {
	defer st.Close()
	br := bufio.NewReaderSize(st, 4096)
	line, err := readCmd(br)
	if err != nil {
		return err
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return reply(st, "ERR unknown\n")
	}
	bad := func(e error) error {
		reply(st, "ERR %v\n", e)
		return fmt.Errorf("%q: %v", line, e)
	}
	switch {
	case f[0] == "ECHO" && len(f) == 2:
		n, err := parseCount(f[1])
		if err != nil {
			return bad(err)
		}
		buf := make([]byte, 64*1024)
		for done := int64(0); done < n; {
			k := int64(len(buf))
			if n-done < k {
				k = n - done
			}
			r, rerr := br.Read(buf[:k])
			if r > 0 {
				if _, werr := st.Write(buf[:r]); werr != nil {
					return fmt.Errorf("ECHO: write after %d bytes: %v", done, werr)
				}
				done += int64(r)
			}
			if rerr != nil && done < n {
				return fmt.Errorf("ECHO: read after %d of %d bytes: %v", done, n, rerr)
			}
		}
		return nil

	case (f[0] == "SINK" || f[0] == "SLOW") && len(f) == 2:
		n, err := parseCount(f[1])
		if err != nil {
			return bad(err)
		}
		chunk := 64 * 1024
		if f[0] == "SLOW" {
			chunk = 4096
		}
		buf := make([]byte, chunk)
		h := newCRC()
		var done int64
		for done < n {
			k := int64(len(buf))
			if n-done < k {
				k = n - done
			}
			r, rerr := br.Read(buf[:k])
			h.Write(buf[:r])
			done += int64(r)
			if rerr != nil && done < n {
				reply(st, "ERR short %d\n", done)
				return fmt.Errorf("%s: read after %d of %d bytes: %v", f[0], done, n, rerr)
			}
		}
		return reply(st, "%08x %d\n", h.Sum32(), n)

	case f[0] == "SEND" && len(f) == 3:
		n, err := parseCount(f[1])
		if err != nil {
			return bad(err)
		}
		seed, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return bad(fmt.Errorf("bad seed %q", f[2]))
		}
		g := newGen(uint32(seed))
		buf := make([]byte, 64*1024)
		for done := int64(0); done < n; {
			k := int64(len(buf))
			if n-done < k {
				k = n - done
			}
			g.Fill(buf[:k])
			if _, werr := st.Write(buf[:k]); werr != nil {
				return fmt.Errorf("SEND: write after %d bytes: %v", done, werr)
			}
			done += k
		}
		return nil

	case f[0] == "HALFCLOSE" && len(f) == 1:
		var count int64
		buf := make([]byte, 64*1024)
		for {
			r, rerr := br.Read(buf)
			count += int64(r)
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return fmt.Errorf("HALFCLOSE: read after %d bytes: %v", count, rerr)
			}
		}
		return reply(st, "BYE %d\n", count)

	case f[0] == "PING" && len(f) == 1:
		rtt, err := sess.Ping()
		if err != nil {
			return bad(fmt.Errorf("ping: %v", err))
		}
		return reply(st, "PONG %d\n", rtt.Nanoseconds())

	case f[0] == "GOAWAY" && len(f) == 1:
		if err := sess.GoAway(); err != nil {
			return bad(fmt.Errorf("goaway: %v", err))
		}
		return reply(st, "OK\n")

	case f[0] == "HOLD" && len(f) == 1:
		hold(sess, st)
		return nil

	default:
		return reply(st, "ERR unknown\n")
	}
}

// hold keeps the stream open without consuming any payload. hashicorp/yamux
// has no way to wait for a stream's end without reading, so poll with
// zero-length reads: they never take bytes out of the receive buffer (hence
// never grant window), but report a reset (ErrConnectionReset) or a FIN with
// nothing buffered (io.EOF). A FIN behind buffered data cannot be seen; such a
// stream is held until the session ends.
func hold(sess *yamux.Session, st *yamux.Stream) {
	for !sess.IsClosed() {
		st.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := st.Read(nil)
		if err == yamux.ErrTimeout {
			continue
		}
		if err != nil {
			logger.Printf("HOLD stream %d ended: %v", st.StreamID(), err)
			return
		}
		// Data is buffered (Read returns immediately): don't spin.
		time.Sleep(200 * time.Millisecond)
	}
}
