package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/understudy/understudy/dispatch"
)

// regionProc is one region's `understudy serve` child of dev-cluster.
type regionProc struct {
	region dispatch.Region
	cmd    *exec.Cmd
	log    string        // its stdout and stderr
	exited chan struct{} // closed once it has exited; err is then set
	err    error
}

// devCluster is the `understudy dev-cluster` command: every region of a deployment
// as its own `understudy serve` process on this machine, each with its own data
// directory and its own embedded NATS node, the nodes clustered. It prints each
// region's URL and PID, waits until all are ready, and on SIGINT or SIGTERM stops
// them all (SIGTERM, then SIGKILL past --stop-timeout). A region that dies
// meanwhile (kill -9 in a drill) is reported and the others run on.
func devCluster(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("dev-cluster", flag.ContinueOnError)
	fl.SetOutput(stderr)
	file := fl.String("deployment", "", "deployment `file` (default: DIR/deployment.json, written with three regions on loopback if absent)")
	dir := fl.String("dir", "understudy-dev-cluster", "`directory` of the regions' data directories and logs")
	readyTimeout := fl.Duration("ready-timeout", 2*time.Minute, "how long the regions may take to become ready")
	stopTimeout := fl.Duration("stop-timeout", 20*time.Second, "how long the regions may take to stop before they are killed")
	fl.Usage = func() {
		fmt.Fprint(fl.Output(), "usage: understudy dev-cluster [flags] [-- serve flags for every region]\n\n")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return err
	}
	serveArgs := fl.Args()
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("dev-cluster dir: %w", err)
	}
	path := *file
	if path == "" {
		path = filepath.Join(*dir, "deployment.json")
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		switch {
		case err == nil:
			_, err = io.WriteString(f, dispatch.ExampleDeployment)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
		case !errors.Is(err, fs.ErrExist):
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	d, err := dispatch.LoadDeployment(path)
	if err != nil {
		return err
	}
	secret, err := clusterSecret(*dir)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("dev-cluster: own executable: %w", err)
	}
	fmt.Fprintf(stdout, "deployment %s: %d regions\n", path, len(d.Regions))
	var procs []*regionProc
	exits := make(chan *regionProc, len(d.Regions)) // each region once, when it exits
	stopAll := func() { stopRegions(procs, *stopTimeout, stdout) }
	for _, r := range d.Regions {
		p, err := startRegion(exe, path, *dir, r, secret, serveArgs, exits)
		if err != nil {
			stopAll()
			return err
		}
		procs = append(procs, p)
		fmt.Fprintf(stdout, "region %s %s pid %d nats %s log %s\n", r.Name, r.URL, p.cmd.Process.Pid, r.NATS, p.log)
	}
	start := time.Now()
	if err := awaitRegions(ctx, procs, *readyTimeout); err != nil {
		stopAll()
		return err
	}
	fmt.Fprintf(stdout, "ready: %d regions in %s; tokens: understudy token --data-dir %s ...; Ctrl-C stops them\n",
		len(procs), time.Since(start).Round(100*time.Millisecond), *dir)
	for len(procs) > 0 {
		select {
		case <-ctx.Done():
			stopAll()
			return nil
		case p := <-exits:
			fmt.Fprintf(stdout, "region %s (pid %d) exited: %v\n", p.region.Name, p.cmd.Process.Pid, exitText(p.err))
			procs = without(procs, p)
		}
	}
	return errors.New("dev-cluster: every region has exited")
}

// clusterSecret is the development token secret the regions share, so that a token
// from `understudy token --data-dir DIR` works at every region: UNDERSTUDY_SECRET,
// else DIR/dev-secret (generated once).
func clusterSecret(dir string) (string, error) {
	if s := os.Getenv("UNDERSTUDY_SECRET"); s != "" {
		return s, nil
	}
	path := filepath.Join(dir, secretFile)
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read secret: %w", err)
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	secret := hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write secret: %w", err)
	}
	return secret, nil
}

// startRegion starts region r's `understudy serve`, its data in dir/<name> and its
// output in dir/<name>.log.
// When it exits, it is sent on exits.
func startRegion(exe, deployment, dir string, r dispatch.Region, secret string, extra []string, exits chan<- *regionProc) (*regionProc, error) {
	u, err := url.Parse(r.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("region %s: url %q has no host:port to listen on", r.Name, r.URL)
	}
	logPath := filepath.Join(dir, r.Name+".log")
	out, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("region %s: log: %w", r.Name, err)
	}
	defer out.Close() // the child has its own copy
	args := append([]string{"serve", "--deployment", deployment, "--region", r.Name,
		"--addr", u.Host, "--data-dir", filepath.Join(dir, r.Name)}, extra...)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "UNDERSTUDY_SECRET="+secret)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("region %s: start: %w", r.Name, err)
	}
	p := &regionProc{region: r, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.exited); exits <- p }()
	return p, nil
}

// awaitRegions waits until every region answers 200 on /readyz, which it does once its
// NATS node is in a cluster with a meta leader and its streams are placed.
func awaitRegions(ctx context.Context, procs []*regionProc, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	defer hc.CloseIdleConnections()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	ready := map[string]bool{}
	for {
		for _, p := range procs {
			select {
			case <-p.exited:
				return fmt.Errorf("region %s exited before it was ready (%v): see %s", p.region.Name, exitText(p.err), p.log)
			default:
			}
			if !ready[p.region.Name] && readyAt(ctx, hc, p.region.URL) {
				ready[p.region.Name] = true
			}
		}
		if len(ready) == len(procs) {
			return nil
		}
		select {
		case <-ctx.Done():
			var waiting []string
			for _, p := range procs {
				if !ready[p.region.Name] {
					waiting = append(waiting, p.region.Name+" (see "+p.log+")")
				}
			}
			return fmt.Errorf("regions not ready after %s: %s", timeout, strings.Join(waiting, ", "))
		case <-tick.C:
		}
	}
}

func readyAt(ctx context.Context, hc *http.Client, base string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// stopRegions sends SIGTERM to every region still running, waits up to timeout for
// them to drain and exit, then kills what is left.
func stopRegions(procs []*regionProc, timeout time.Duration, stdout io.Writer) {
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for _, p := range procs {
		select {
		case <-p.exited:
		case <-deadline.C:
			deadline.Reset(0) // the rest get no more time
			fmt.Fprintf(stdout, "region %s (pid %d) did not stop within %s: killing it\n", p.region.Name, p.cmd.Process.Pid, timeout)
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		fmt.Fprintf(stdout, "region %s (pid %d) stopped: %s\n", p.region.Name, p.cmd.Process.Pid, exitText(p.err))
	}
}

func exitText(err error) string {
	if err == nil {
		return "exit 0"
	}
	return err.Error()
}

func without(procs []*regionProc, gone *regionProc) []*regionProc {
	out := procs[:0:0]
	for _, p := range procs {
		if p != gone {
			out = append(out, p)
		}
	}
	return out
}
