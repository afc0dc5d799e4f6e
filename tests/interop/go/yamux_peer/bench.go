package main

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// benchSink counts bytes received by the server side of a benchmark and
// records the moment the last expected byte arrived.
type benchSink struct {
	total    int64
	want     int64
	doneOnce sync.Once
	doneAt   time.Time
	done     chan struct{}
}

func newBenchSink(want int64) *benchSink {
	s := &benchSink{want: want, done: make(chan struct{})}
	if want == 0 {
		s.finish()
	}
	return s
}

func (s *benchSink) finish() {
	s.doneOnce.Do(func() { s.doneAt = time.Now(); close(s.done) })
}

// drain reads r to EOF with a 64 KiB buffer (like io.Copy to io.Discard, but
// without io.Discard's 8 KiB ReadFrom buffer).
func (s *benchSink) drain(r io.Reader) (int64, error) {
	buf := make([]byte, 64*1024)
	var n int64
	for {
		m, err := r.Read(buf)
		if m > 0 {
			n += int64(m)
			if atomic.AddInt64(&s.total, int64(m)) == s.want {
				s.finish()
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func writeN(w io.Writer, buf []byte, n int64) error {
	for n > 0 {
		k := int64(len(buf))
		if n < k {
			k = n
		}
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func benchReport(name string, start, end time.Time) {
	secs := end.Sub(start).Seconds()
	total := float64(*flagStreams) * float64(*flagBytes)
	println(fmt.Sprintf("BENCH %s streams=%d bytes_per_stream=%d seconds=%.3f MBps=%.1f",
		name, *flagStreams, *flagBytes, secs, total/secs/1e6))
	ok("")
}

func benchListen() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	return ln
}

func runBenchYamux() {
	N, B := *flagStreams, *flagBytes
	ln := benchListen()
	sink := newBenchSink(int64(N) * B)
	errs := make(chan error, 2*N+2)
	var serverWG sync.WaitGroup
	serverWG.Add(N)

	go func() {
		conn, err := ln.Accept()
		ln.Close()
		if err != nil {
			errs <- fmt.Errorf("accept: %v", err)
			return
		}
		sess, err := yamux.Server(conn, yamuxConfig())
		if err != nil {
			errs <- err
			return
		}
		for i := 0; i < N; i++ {
			st, err := sess.AcceptStream()
			if err != nil {
				errs <- fmt.Errorf("server AcceptStream: %v", err)
				return
			}
			go func() {
				defer serverWG.Done()
				defer st.Close()
				if n, err := sink.drain(st); err != nil || n != B {
					errs <- fmt.Errorf("server stream %d: got %d of %d bytes: %v", st.StreamID(), n, B, err)
				}
			}()
		}
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		fail("dial: %v", err)
	}
	sess, err := yamux.Client(conn, yamuxConfig())
	if err != nil {
		fail("yamux client: %v", err)
	}
	buf := make([]byte, 64*1024)
	var clientWG sync.WaitGroup
	start := time.Now()
	for i := 0; i < N; i++ {
		clientWG.Add(1)
		go func() {
			defer clientWG.Done()
			st, err := sess.OpenStream()
			if err != nil {
				errs <- fmt.Errorf("OpenStream: %v", err)
				return
			}
			if err := writeN(st, buf, B); err != nil {
				errs <- fmt.Errorf("client stream %d: %v", st.StreamID(), err)
			}
			st.Close()
		}()
	}
	select {
	case <-sink.done:
	case err := <-errs:
		fail("bench: %v", err)
	}
	end := sink.doneAt
	clientWG.Wait()
	serverWG.Wait()
	select {
	case err := <-errs:
		fail("bench: %v", err)
	default:
	}
	sess.Close()
	benchReport("go-yamux", start, end)
}

func runBenchTCP() {
	N, B := *flagStreams, *flagBytes
	ln := benchListen()
	sink := newBenchSink(int64(N) * B)
	errs := make(chan error, 2*N+2)
	var serverWG sync.WaitGroup
	serverWG.Add(N)

	go func() {
		for i := 0; i < N; i++ {
			c, err := ln.Accept()
			if err != nil {
				errs <- fmt.Errorf("accept: %v", err)
				return
			}
			go func() {
				defer serverWG.Done()
				defer c.Close()
				if n, err := sink.drain(c); err != nil || n != B {
					errs <- fmt.Errorf("server conn: got %d of %d bytes: %v", n, B, err)
				}
			}()
		}
		ln.Close()
	}()

	buf := make([]byte, 64*1024)
	var clientWG sync.WaitGroup
	start := time.Now()
	for i := 0; i < N; i++ {
		clientWG.Add(1)
		go func() {
			defer clientWG.Done()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				errs <- fmt.Errorf("dial: %v", err)
				return
			}
			defer c.Close()
			if err := writeN(c, buf, B); err != nil {
				errs <- fmt.Errorf("client conn: %v", err)
			}
		}()
	}
	select {
	case <-sink.done:
	case err := <-errs:
		fail("bench-tcp: %v", err)
	}
	end := sink.doneAt
	clientWG.Wait()
	serverWG.Wait()
	select {
	case err := <-errs:
		fail("bench-tcp: %v", err)
	default:
	}
	benchReport("raw-tcp", start, end)
}
