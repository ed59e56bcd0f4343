package natslog

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ClusterName is the name of the NATS cluster the regions of a deployment form.
const ClusterName = "understudy"

// RegionTag is the server tag prefix that places a stream's replicas: each node is
// tagged region:<name>, and the servers refuse to put two replicas of one stream or
// bucket on nodes with the same region tag (JetStreamUniqueTag), so an R3 stream
// lives in three distinct regions.
const RegionTag = "region"

// Node is one region's node of a deployment's NATS cluster.
type Node struct {
	Region string   // the server's name and its region tag
	Client string   // host:port clients connect to
	Route  string   // host:port the other nodes' routes connect to
	Peers  []string // host:port of the other regions' routes
	// Advertise, if set, is the host:port the other nodes are told to route to
	// instead of Route (a node behind NAT, or a test's proxy in the route path).
	Advertise string
	DataDir   string // JetStream storage
	// Log, if not nil, hears the server's notices, warnings and errors (routes coming
	// and going, elections, placement failures).
	Log *slog.Logger
}

// StartNode starts n in process: JetStream in n.DataDir, fsync on every write
// (SyncAlways: an acknowledged write is on disk on each replica that acknowledged
// it), clustered with n.Peers. It returns once the node takes client connections;
// the cluster may not have formed yet (see AwaitMetaLeader).
func StartNode(n Node) (*Embedded, error) {
	host, port, err := splitAddr(n.Client)
	if err != nil {
		return nil, fmt.Errorf("nats node %s: client address: %w", n.Region, err)
	}
	rhost, rport, err := splitAddr(n.Route)
	if err != nil {
		return nil, fmt.Errorf("nats node %s: cluster address: %w", n.Region, err)
	}
	var routes []*url.URL
	for _, p := range n.Peers {
		if _, _, err := splitAddr(p); err != nil {
			return nil, fmt.Errorf("nats node %s: peer route %q: %w", n.Region, p, err)
		}
		routes = append(routes, &url.URL{Scheme: "nats", Host: p})
	}
	srv, err := server.NewServer(&server.Options{
		ServerName:         n.Region,
		Host:               host,
		Port:               port,
		JetStream:          true,
		StoreDir:           n.DataDir,
		SyncAlways:         true,
		Tags:               []string{RegionTag + ":" + n.Region},
		JetStreamUniqueTag: RegionTag,
		Cluster:            server.ClusterOpts{Name: ClusterName, Host: rhost, Port: rport, Advertise: n.Advertise},
		Routes:             routes,
		NoSigs:             true,
		NoLog:              n.Log == nil,
	})
	if err != nil {
		return nil, fmt.Errorf("nats node %s: %w", n.Region, err)
	}
	if n.Log != nil {
		srv.SetLoggerV2(serverLog{n.Log}, false, false, false)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats node %s did not take connections on %s within 10 s", n.Region, n.Client)
	}
	return &Embedded{srv: srv, peers: len(n.Peers)}, nil
}

func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: want 1 to 65535", p)
	}
	return host, port, nil
}

// AwaitMetaLeader waits until the cluster has elected a JetStream meta leader, without
// which no stream can be created or changed. A cold cluster takes several seconds
// (about 6.5 s for three nodes on one machine: routes, then a Raft election whose
// timeouts nats-server does not let us configure). It logs what it waits for
// whenever that changes, and at least every 5 s; it fails when ctx ends.
func (e *Embedded) AwaitMetaLeader(ctx context.Context, log *slog.Logger) error {
	start := time.Now()
	var last string
	lastLog := start
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		leader, state := e.metaState()
		if leader != "" {
			log.Info("nats cluster formed", slog.String("meta_leader", leader), slog.String("state", state),
				slog.Duration("after", time.Since(start).Round(time.Millisecond)))
			return nil
		}
		if state != last || time.Since(lastLog) >= 5*time.Second {
			log.Info("waiting for the nats cluster to elect a jetstream meta leader (a cold cluster takes several seconds)",
				slog.String("state", state), slog.Duration("waited", time.Since(start).Round(time.Millisecond)))
			last, lastLog = state, time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nats cluster: no jetstream meta leader after %s (%s): %w",
				time.Since(start).Round(time.Second), state, context.Cause(ctx))
		case <-tick.C:
		}
	}
}

// metaState is the meta group's leader ("" while none) and a short account of what
// the node sees of its cluster.
func (e *Embedded) metaState() (leader, state string) {
	routes := fmt.Sprintf("%d of %d peers routed", min(e.srv.NumRoutes(), e.peers), e.peers)
	info, err := e.srv.Jsz(&server.JSzOptions{})
	switch {
	case err != nil:
		return "", routes + ", jetstream: " + err.Error()
	case info.Meta == nil:
		return "", routes + ", no meta group yet"
	case info.Meta.Leader == "":
		return "", fmt.Sprintf("%s, meta group of %d without a leader", routes, info.Meta.Size)
	}
	return info.Meta.Leader, fmt.Sprintf("%s, meta group of %d", routes, info.Meta.Size)
}

// Name is the server's name (its region, for a node of a deployment).
func (e *Embedded) Name() string { return e.srv.Name() }

// ClusterOptions are the client options for a deployment's cluster, after Connect's:
// the servers are tried in the order given (the region's own node first), a node
// that stops answering (SIGSTOP, a cut link) is noticed after two missed pings a
// second apart. Reconnects keep Connect's policy: forever, the first round after
// 50 ms, backing off to MaxReconnectDelay.
func ClusterOptions() []nats.Option {
	return []nats.Option{
		nats.DontRandomize(),
		nats.PingInterval(time.Second),
		nats.MaxPingsOutstanding(2),
	}
}

// serverLog is a nats-server logger that writes to a slog.Logger.
type serverLog struct{ log *slog.Logger }

func (l serverLog) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l serverLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l serverLog) Fatalf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l serverLog) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLog) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
