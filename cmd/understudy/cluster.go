package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/understudy/understudy/dispatch/natslog"
)

// clusterFormTimeout bounds how long a region of a deployment waits at start-up for
// the NATS cluster to elect its JetStream meta leader: a cold cluster of three takes
// about 6.5 s once a majority of its nodes run, and the other regions may be starting
// a little later.
const clusterFormTimeout = 2 * time.Minute

// replicas is how many copies of the ride log, the ledger, the idempotency bucket and
// the lease bucket the region asks for: 3 when its NATS is a cluster of a
// deployment's three regions or more (its embedded node clustered, or --nats with a
// cluster of three nodes or more; placed in distinct regions by the nodes' region
// tags, so an acknowledged write is on two regions before the client hears of it),
// else 1 (--nats with a single server, as tests and small trials run).
func (s *server) replicas() int {
	if !s.clustered || len(s.cfg.Deployment.Regions) < 3 {
		return 1
	}
	if s.cfg.NATSURL != "" && len(s.nats.Servers()) < 3 {
		s.log.Warn("--nats names a NATS of fewer than three servers: the log, the ledger and the leases keep one copy, and do not survive the loss of that server",
			slog.Any("servers", s.nats.Servers()))
		return 1
	}
	return 3
}

// openClusterNode embeds the region's own node of the deployment's NATS cluster, at
// the file's nats and nats_cluster addresses, routed to every other region's node,
// with JetStream in the data directory; waits for the cluster to have a meta leader;
// and connects to every region's node, its own first.
func (s *server) openClusterNode(ctx context.Context, log *slog.Logger, opts []nats.Option, connected <-chan struct{}) error {
	own, _ := s.cfg.Deployment.Region(s.cfg.Region)
	if own.NATS == "" || own.NATSCluster == "" {
		return fmt.Errorf("deployment %s: region %q has no nats and nats_cluster addresses for its embedded node (or give --nats for an external cluster)", s.cfg.DeploymentFile, own.Name)
	}
	u, err := url.Parse(own.NATS)
	if err != nil {
		return fmt.Errorf("deployment %s: region %q: nats %q: %w", s.cfg.DeploymentFile, own.Name, own.NATS, err)
	}
	node := natslog.Node{Region: own.Name, Client: u.Host, Route: own.NATSCluster, DataDir: filepath.Join(s.cfg.DataDir, "nats"),
		Log: s.log.With(slog.String("component", "nats-server"))}
	urls := []string{own.NATS}
	for _, r := range s.cfg.Deployment.Regions {
		if r.Name == own.Name {
			continue
		}
		if r.NATSCluster != "" {
			node.Peers = append(node.Peers, r.NATSCluster)
		}
		if r.NATS != "" {
			urls = append(urls, r.NATS)
		}
	}
	emb, err := natslog.StartNode(node)
	if err != nil {
		return err
	}
	s.closers = append(s.closers, func() error { emb.Close(); return nil })
	if err := os.WriteFile(filepath.Join(s.cfg.DataDir, natsURLFile), []byte(emb.URL()+"\n"), 0o600); err != nil {
		return fmt.Errorf("write nats url: %w", err)
	}
	log.Info("nats node started", slog.String("client", node.Client), slog.String("cluster", node.Route),
		slog.Any("routes", node.Peers), slog.String("store_dir", node.DataDir))
	wctx, cancel := context.WithTimeoutCause(ctx, clusterFormTimeout,
		fmt.Errorf("gave up after %s: are a majority of the regions' nodes running and routed?", clusterFormTimeout))
	defer cancel()
	if err := emb.AwaitMetaLeader(wctx, log); err != nil {
		return err
	}
	all := strings.Join(urls, ",")
	nc, err := natslog.Connect(all, append(append(opts, natslog.ClusterOptions()...), nats.RetryOnFailedConnect(true))...)
	if err != nil {
		return err
	}
	s.nats = nc
	s.closers = append(s.closers, func() error { nc.Close(); return nil })
	return s.awaitStreams(ctx, log, all, connected)
}
