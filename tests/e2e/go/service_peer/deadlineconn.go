package main

import (
	"net"
	"os"
	"sync"
	"time"
)

// deadlineConn gives a yamux stream the read-deadline behaviour net/http relies on. The packaged
// hashicorp/yamux (2019) has two gaps that break http.Server on keep-alive connections:
//
//   - Stream.SetReadDeadline does not wake a Read that is already blocked, so the server's
//     abortPendingRead (after every response) blocks until the client sends more bytes or closes;
//     a `Connection: close` response then never closes the stream, and Shutdown waits its whole
//     bound for such connections;
//   - an expired deadline returns yamux.ErrTimeout, which is not a net.Error, so the server's
//     background reader treats it as a real read error and cancels the connection's context:
//     every later request on that keep-alive connection starts with a cancelled context.
//
// A goroutine reads the stream ahead (one chunk at most); Read waits for that chunk, its own
// deadline, or a deadline change, and reports expiry as os.ErrDeadlineExceeded (a net.Error
// whose Timeout() is true).
type deadlineConn struct {
	net.Conn

	data   chan readChunk
	closed chan struct{}
	once   sync.Once

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{} // closed and replaced on every SetReadDeadline
	pending  []byte
	err      error // sticky once the stream reported it
}

type readChunk struct {
	b   []byte
	err error
}

func newDeadlineConn(c net.Conn) *deadlineConn {
	d := &deadlineConn{Conn: c, data: make(chan readChunk, 1), closed: make(chan struct{}),
		changed: make(chan struct{})}
	go d.readAhead()
	return d
}

func (d *deadlineConn) readAhead() {
	for {
		buf := make([]byte, 32*1024)
		n, err := d.Conn.Read(buf)
		select {
		case d.data <- readChunk{b: buf[:n], err: err}:
		case <-d.closed:
			return
		}
		if err != nil {
			return
		}
	}
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		d.mu.Lock()
		if len(d.pending) > 0 {
			n := copy(p, d.pending)
			d.pending = d.pending[n:]
			d.mu.Unlock()
			return n, nil
		}
		if d.err != nil {
			err := d.err
			d.mu.Unlock()
			return 0, err
		}
		deadline, changed := d.deadline, d.changed
		d.mu.Unlock()

		var timeout <-chan time.Time
		var timer *time.Timer
		if !deadline.IsZero() {
			wait := time.Until(deadline)
			if wait <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		select {
		case c := <-d.data:
			if timer != nil {
				timer.Stop()
			}
			d.mu.Lock()
			d.pending = c.b
			if c.err != nil {
				d.err = c.err
			}
			d.mu.Unlock()
		case <-timeout:
			return 0, os.ErrDeadlineExceeded
		case <-changed:
			if timer != nil {
				timer.Stop()
			}
		case <-d.closed:
			if timer != nil {
				timer.Stop()
			}
			return 0, net.ErrClosed
		}
	}
}

func (d *deadlineConn) SetReadDeadline(t time.Time) error {
	d.mu.Lock()
	d.deadline = t
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
	return nil
}

func (d *deadlineConn) SetDeadline(t time.Time) error {
	_ = d.SetReadDeadline(t)
	return d.Conn.SetWriteDeadline(t)
}

func (d *deadlineConn) Close() error {
	d.once.Do(func() { close(d.closed) })
	return d.Conn.Close()
}
