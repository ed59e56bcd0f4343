package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

func TestDebugAddrServesPprof(t *testing.T) {
	var log syncBuffer
	mustServeLog(t, &log, "--debug-addr", "127.0.0.1:0")
	m := regexp.MustCompile(`"debug_addr":"([^"]+)"`).FindStringSubmatch(log.String())
	if m == nil {
		t.Fatalf("no debug_addr in the log:\n%s", log.String())
	}
	resp, err := http.Get("http://" + m[1] + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "goroutine") {
		t.Fatalf("/debug/pprof/ = %d %q", resp.StatusCode, b)
	}
}

func TestDebugAddrBusyFailsTheStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = serve(context.Background(), []string{"--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--debug-addr", ln.Addr().String()},
		io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "--debug-addr") {
		t.Fatalf("serve with a busy --debug-addr: %v", err)
	}
}
