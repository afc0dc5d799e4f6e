package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// A driver runs one scenario on the session and returns the text that follows
// "OK" on the final line; it calls fail() on any error.
var drivers = map[string]func(*yamux.Session) string{
	"echo":         driveEcho,
	"sink":         driveSink,
	"send":         driveSend,
	"ping":         drivePing,
	"goaway-check": driveGoAway,
	"slow":         driveSlow,
	"halfclose":    driveHalfClose,
	"hold":         driveHold,
	"unknown":      driveUnknown,
}

func open(sess *yamux.Session) *yamux.Stream {
	st, err := sess.OpenStream()
	if err != nil {
		fail("OpenStream: %v", err)
	}
	return st
}

// writeGen writes n bytes of g to w (after an optional prefix) and returns the CRC.
func writeGen(w io.Writer, g *gen, n int64) (uint32, error) {
	h := newCRC()
	buf := make([]byte, 64*1024)
	for done := int64(0); done < n; {
		k := int64(len(buf))
		if n-done < k {
			k = n - done
		}
		g.Fill(buf[:k])
		h.Write(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return 0, fmt.Errorf("write after %d of %d bytes: %v", done, n, err)
		}
		done += k
	}
	return h.Sum32(), nil
}

// readVerify reads exactly n bytes from r, comparing them with g, and returns
// their CRC. It reports the first mismatching offset.
func readVerify(r io.Reader, g *gen, n int64) (uint32, error) {
	h := newCRC()
	buf := make([]byte, 64*1024)
	want := make([]byte, 64*1024)
	var done int64
	for done < n {
		k := int64(len(buf))
		if n-done < k {
			k = n - done
		}
		m, err := r.Read(buf[:k])
		if m > 0 {
			g.Fill(want[:m])
			if !bytes.Equal(buf[:m], want[:m]) {
				for i := 0; i < m; i++ {
					if buf[i] != want[i] {
						return 0, fmt.Errorf("data mismatch at offset %d: got %#02x want %#02x", done+int64(i), buf[i], want[i])
					}
				}
			}
			h.Write(buf[:m])
			done += int64(m)
		}
		if err != nil && done < n {
			return 0, fmt.Errorf("read after %d of %d bytes: %v", done, n, err)
		}
	}
	return h.Sum32(), nil
}

// expectEOF checks that r has no more data and ends with EOF.
func expectEOF(r io.Reader) error {
	var b [64]byte
	for {
		m, err := r.Read(b[:])
		if m > 0 {
			return fmt.Errorf("unexpected %d extra bytes: %q", m, b[:m])
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("expected EOF, got %v", err)
		}
	}
}

// readReply reads one reply line, then expects EOF.
func readReply(st *yamux.Stream) string {
	br := bufio.NewReader(st)
	line, err := br.ReadString('\n')
	if err != nil {
		fail("stream %d: reading reply (got %q): %v", st.StreamID(), line, err)
	}
	if err := expectEOF(br); err != nil {
		fail("stream %d after reply %q: %v", st.StreamID(), strings.TrimSpace(line), err)
	}
	return strings.TrimRight(line, "\n")
}

func writeLine(st *yamux.Stream, line string) {
	if _, err := st.Write([]byte(line + "\n")); err != nil {
		fail("stream %d: writing %q: %v", st.StreamID(), line, err)
	}
}

func driveEcho(sess *yamux.Session) string {
	n := *flagBytes
	var wg sync.WaitGroup
	errs := make(chan error, *flagStreams)
	for i := 0; i < *flagStreams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if err := echoStream(sess, i, n); err != nil {
				errs <- fmt.Errorf("echo stream #%d: %v", i, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	if err, bad := <-errs; bad {
		fail("%v", err)
	}
	return fmt.Sprintf(" streams=%d bytes=%d", *flagStreams, n)
}

func echoStream(sess *yamux.Session, i int, n int64) error {
	st, err := sess.OpenStream()
	if err != nil {
		return fmt.Errorf("OpenStream: %v", err)
	}
	defer st.Close()
	seed := uint32(*flagSeed) + uint32(i)
	werr := make(chan error, 1)
	var sentCRC uint32
	go func() {
		if _, err := st.Write([]byte(fmt.Sprintf("ECHO %d\n", n))); err != nil {
			werr <- err
			return
		}
		c, err := writeGen(st, newGen(seed), n)
		sentCRC = c
		werr <- err
	}()
	gotCRC, rerr := readVerify(st, newGen(seed), n)
	if rerr != nil {
		return fmt.Errorf("stream %d: %v", st.StreamID(), rerr)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("stream %d: writing: %v", st.StreamID(), err)
	}
	if gotCRC != sentCRC {
		return fmt.Errorf("stream %d: crc mismatch: sent %08x got %08x", st.StreamID(), sentCRC, gotCRC)
	}
	if err := expectEOF(st); err != nil {
		return fmt.Errorf("stream %d: %v", st.StreamID(), err)
	}
	return nil
}

// sinkLike drives SINK or SLOW.
func sinkLike(sess *yamux.Session, cmd string) string {
	n := *flagBytes
	st := open(sess)
	defer st.Close()
	writeLine(st, fmt.Sprintf("%s %d", cmd, n))
	crc, err := writeGen(st, newGen(uint32(*flagSeed)), n)
	if err != nil {
		fail("%s stream %d: %v", cmd, st.StreamID(), err)
	}
	want := fmt.Sprintf("%08x %d", crc, n)
	if got := readReply(st); got != want {
		fail("%s reply %q, want %q", cmd, got, want)
	}
	return fmt.Sprintf(" crc=%08x bytes=%d", crc, n)
}

func driveSink(sess *yamux.Session) string { return sinkLike(sess, "SINK") }
func driveSlow(sess *yamux.Session) string { return sinkLike(sess, "SLOW") }

func driveSend(sess *yamux.Session) string {
	n := *flagBytes
	seed := uint32(*flagSeed)
	st := open(sess)
	defer st.Close()
	writeLine(st, fmt.Sprintf("SEND %d %d", n, seed))
	crc, err := readVerify(st, newGen(seed), n)
	if err != nil {
		fail("SEND stream %d: %v", st.StreamID(), err)
	}
	if err := expectEOF(st); err != nil {
		fail("SEND stream %d: %v", st.StreamID(), err)
	}
	return fmt.Sprintf(" crc=%08x bytes=%d", crc, n)
}

func drivePing(sess *yamux.Session) string {
	var best time.Duration
	for i := 0; i < 3; i++ {
		rtt, err := sess.Ping()
		if err != nil {
			fail("ping %d: %v", i, err)
		}
		logger.Printf("ping %d: rtt %v", i, rtt)
		if i == 0 || rtt < best {
			best = rtt
		}
	}
	return fmt.Sprintf(" rtt=%d", best.Nanoseconds())
}

func driveGoAway(sess *yamux.Session) string {
	st := open(sess)
	writeLine(st, "GOAWAY")
	if got := readReply(st); got != "OK" {
		fail("GOAWAY reply %q, want OK", got)
	}
	st.Close()

	st2, err := sess.OpenStream()
	if err == yamux.ErrRemoteGoAway {
		logger.Printf("goaway-check: OpenStream refused locally: %v", err)
		return " goaway-refused"
	}
	if err != nil {
		fail("goaway-check: OpenStream after GOAWAY: unexpected error %v", err)
	}
	defer st2.Close()
	if _, err := st2.Write([]byte("PING\n")); err != nil {
		if err == yamux.ErrConnectionReset {
			logger.Printf("goaway-check: write on new stream: %v", err)
			return " goaway-refused"
		}
		fail("goaway-check: write on new stream: unexpected error %v", err)
	}
	st2.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [64]byte
	m, err := st2.Read(b[:])
	switch {
	case m > 0:
		fail("goaway-check: stream opened after GOAWAY was served: %q", b[:m])
	case err == yamux.ErrConnectionReset || err == io.EOF:
		logger.Printf("goaway-check: new stream ended with %v", err)
		return " goaway-refused"
	}
	fail("goaway-check: new stream after GOAWAY: %v", err)
	return ""
}

// driveHalfClose sends HALFCLOSE + payload and closes its write side. A
// hashicorp stream returns EOF from Read right after its own Close() whenever
// nothing is buffered, so poll until the reply line has arrived.
func driveHalfClose(sess *yamux.Session) string {
	n := *flagBytes
	st := open(sess)
	writeLine(st, "HALFCLOSE")
	if _, err := writeGen(st, newGen(uint32(*flagSeed)), n); err != nil {
		fail("HALFCLOSE stream %d: %v", st.StreamID(), err)
	}
	st.Close()
	var got []byte
	var b [256]byte
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.HasSuffix(got, []byte("\n")) {
		m, err := st.Read(b[:])
		got = append(got, b[:m]...)
		if err == io.EOF && m == 0 {
			if time.Now().After(deadline) {
				fail("HALFCLOSE: no reply after half-close (got %q)", got)
			}
			time.Sleep(5 * time.Millisecond)
		} else if err != nil && err != io.EOF {
			fail("HALFCLOSE: read: %v", err)
		}
	}
	want := fmt.Sprintf("BYE %d\n", n)
	if string(got) != want {
		fail("HALFCLOSE reply %q, want %q", got, want)
	}
	return fmt.Sprintf(" halfclose bytes=%d", n)
}

// driveHold sends HOLD and writes until the send window is exhausted; the
// server never reads, so exactly its receive window (assumed to be the same
// -window as ours) must be accepted, line included.
func driveHold(sess *yamux.Session) string {
	st := open(sess)
	defer st.Close()
	buf := make([]byte, 64*1024)
	copy(buf, "HOLD\n")
	st.SetWriteDeadline(time.Now().Add(time.Second))
	var total int64
	for {
		m, err := st.Write(buf)
		total += int64(m)
		if err == yamux.ErrTimeout {
			break
		}
		if err != nil {
			fail("HOLD: write after %d bytes: %v", total, err)
		}
		if total > int64(*flagWindow)+int64(len(buf)) {
			fail("HOLD: wrote %d bytes, window %d not enforced", total, *flagWindow)
		}
	}
	if total != int64(*flagWindow) {
		fail("HOLD: send stalled after %d bytes, want window %d", total, *flagWindow)
	}
	return " hold window=" + strconv.FormatInt(total, 10)
}

func driveUnknown(sess *yamux.Session) string {
	st := open(sess)
	defer st.Close()
	writeLine(st, "FROBNICATE 1 2 3")
	if got := readReply(st); got != "ERR unknown" {
		fail("unknown command reply %q, want \"ERR unknown\"", got)
	}
	return " unknown-rejected"
}
