package natslog_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/dispatchtest"
	"github.com/understudy/understudy/dispatch/natslog"
)

// slowLink is a TCP proxy in front of a NATS server that holds every byte the server
// sends for delay before passing it on: JetStream as it answers under overload, each
// acknowledgement late by more than one request's attempt.
type slowLink struct {
	ln    net.Listener
	to    string
	delay time.Duration
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startSlowLink(tb testing.TB, to string, delay time.Duration) *slowLink {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &slowLink{ln: ln, to: to, delay: delay}
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *slowLink) URL() string { return "nats://" + s.ln.Addr().String() }

func (s *slowLink) track(c ...net.Conn) {
	s.mu.Lock()
	s.conns = append(s.conns, c...)
	s.mu.Unlock()
}

func (s *slowLink) accept() {
	defer s.wg.Done()
	for {
		client, err := s.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", s.to)
		if err != nil {
			client.Close()
			continue
		}
		s.track(client, server)
		type chunk struct {
			at time.Time
			b  []byte
		}
		chunks := make(chan chunk, 1024)
		s.wg.Add(3)
		go func() { defer s.wg.Done(); _, _ = io.Copy(server, client); server.Close() }()
		go func() { // server to proxy: stamp each read
			defer s.wg.Done()
			defer close(chunks)
			for {
				buf := make([]byte, 32<<10)
				n, err := server.Read(buf)
				if n > 0 {
					chunks <- chunk{time.Now(), buf[:n]}
				}
				if err != nil {
					return
				}
			}
		}()
		go func() { // proxy to client: each chunk delay after it came
			defer s.wg.Done()
			defer client.Close()
			for c := range chunks {
				time.Sleep(time.Until(c.at.Add(s.delay)))
				if _, err := client.Write(c.b); err != nil {
					for range chunks {
					}
					return
				}
			}
		}()
	}
}

func (s *slowLink) Close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// TestLedgerRecordsWhenAnswersAreSlow: under overload JetStream's acknowledgement of
// a trip's entry can take longer than one attempt's second. The ledger must wait for
// it within the caller's deadline rather than give each send up at one second and
// send again (every later send waits behind the earlier ones, so none would ever be
// answered in time, and no complete could pass the ledger); a caller whose deadline
// is too short hears unavailable, which a driver retries, not internal; and the retry
// finds the entry its first try stored.
func TestLedgerRecordsWhenAnswersAreSlow(t *testing.T) {
	srv, err := natslog.StartEmbedded(t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	link := startSlowLink(t, srv.URL()[len("nats://"):], 1500*time.Millisecond)
	defer link.Close()
	nc, err := natslog.Connect(link.URL(), nats.Timeout(dispatchtest.Patience)) // the handshake is two late answers
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx := context.Background()
	l, err := natslog.OpenLedger(ctx, nc, 1)
	if err != nil {
		t.Fatal(err)
	}

	// An answer 1.5 s late, well within the deadline (a driver frame's is 5 s; more
	// here, for a busy machine): recorded.
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	got, err := l.Record(rctx, entry("r_slow", "d-1", t0))
	cancel()
	if err != nil || got.Seq == 0 {
		t.Fatalf("record with answers 1.5 s late and 15 s to go: %+v, %v", got, err)
	}

	// A deadline shorter than the answer: a retryable error, not internal.
	rctx, cancel = context.WithTimeout(ctx, 700*time.Millisecond)
	_, err = l.Record(rctx, entry("r_late", "d-1", t0))
	cancel()
	if code := dispatch.ErrorCode(err); code != dispatch.ECodeUnavailable || dispatch.RetryAfter(err) == 0 {
		t.Fatalf("record past its deadline: code %q (retry after %d s), %v; want unavailable with Retry-After", code, dispatch.RetryAfter(err), err)
	}
	// Its send was stored all the same; the retry answers with that entry, once.
	rctx, cancel = context.WithTimeout(ctx, 15*time.Second)
	again, err := l.Record(rctx, entry("r_late", "d-1", t0.Add(time.Minute)))
	cancel()
	if err != nil || again.Seq == 0 || !again.CompletedAt.Equal(t0) {
		t.Fatalf("retried record: %+v, %v; want the first try's entry (completed %s)", again, err, t0)
	}

	// The ride log's append past its deadline is retryable too.
	rl, err := natslog.OpenRideLog(ctx, nc, "seoul", 1)
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	err = rl.Append(actx, []dispatch.Ride{{ID: "r_late", Version: 3, Status: dispatch.RideInProgress}})
	cancel()
	if code := dispatch.ErrorCode(err); code != dispatch.ECodeUnavailable || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("append past its deadline: code %q, %v; want unavailable", code, err)
	}
}
