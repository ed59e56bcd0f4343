package natslog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/understudy/understudy/dispatch"
)

// LeaseBucket is the JetStream key-value bucket of the areas' leases: one key per
// area (its name), whose entry names the region holding the lease and the lease's
// fencing epoch. Each entry lives the lease time (a per-key TTL): a holder that stops
// renewing loses the key to the server's expiry.
const LeaseBucket = "UNDERSTUDY_LEASES"

// leaseMarkerTTL is how long the bucket keeps the marker of an expired lease: the
// marker tells a region starting later who held the area last, so the lost region's
// successor (not the area's home) takes it.
const leaseMarkerTTL = 7 * 24 * time.Hour

// leasePrecedence is how long a successor lets the last holder retake a key it has
// just found gone before trying itself.
const leasePrecedence = time.Second

// leaseMargin is what a successor waits beyond the lease time, after the last
// renewal it saw, before it tries to take a lapsed area: the holder's clock and the
// server's may run a little apart.
const leaseMargin = 500 * time.Millisecond

// leaseValue is a lease entry.
type leaseValue struct {
	Region string `json:"region"`
	// Epoch is the revision at which Region took (or was given) the lease; 0 on the
	// entry of the take itself, whose revision it is.
	Epoch uint64 `json:"epoch,omitempty"`
}

// Leases is a region's view of the areas' leases and its hold on its own. It
// implements dispatch.Serving (who serves an area now, under which epoch) and
// Fences (the fence of each area it last took).
//
// The rules (docs/failover.md explains them):
//   - A region serves an area only while its lease is valid on its own monotonic
//     clock, counted from when it sent its last successful renewal (a
//     compare-and-set on the key's revision, every third of the lease time). It
//     stops the moment that runs out, whatever the bucket says.
//   - Having taken a lease it writes the area's fence in the ride log, so that an
//     earlier holder's writes are refused by the log itself, and rebuilds the area's
//     rides from the log (Adopt) before it serves.
//   - An area whose key is absent or expired is taken by the first region of its
//     chain that can: the region that held it last (or its home, if none ever did)
//     at once, then that region's successors in order, each waiting the lease time
//     and a margin after the last renewal it saw, plus a lease time per place, and
//     only while no region ahead of it in the chain is alive (seen renewing a lease
//     of its own within the lease time of the last renewal seen from anyone).
//   - An entry naming this region that it does not hold (a move to it, or a lease
//     of its previous run) is claimed by a compare-and-set on its revision.
type Leases struct {
	Deployment *dispatch.Deployment
	Region     string // this region
	Log        *RideLog
	// Adopt rebuilds an area's rides from the log once this region has taken its
	// lease and fence, before it serves it (dispatch.Engine.Adopt).
	Adopt func(ctx context.Context, area string) (int, error)
	// Moved is told when an area this region may hold rides of is held by another
	// region now, or by nobody (to is then ""): its drivers and riders go elsewhere.
	Moved   func(area, to string)
	Logger  *slog.Logger
	Metrics *LeaseMetrics // nil records nothing

	js        jetstream.JetStream
	kv        jetstream.KeyValue
	ttl       time.Duration // the deployment's lease time
	serverTTL time.Duration // the keys' TTL: the lease time in whole seconds, rounded up

	mu    sync.Mutex
	areas map[string]*lease
	alive map[string]time.Time // when this region last saw each region write a lease entry
	// resumed is when the bucket last came back to life: an entry seen after none for
	// half a lease time (an election, or this region's start). See eligible.
	resumed time.Time
	poke    chan struct{} // asks run for a tick now
	stop    context.CancelFunc
	done    chan struct{}
}

// lease is one area as this region knows it.
type lease struct {
	home string
	// as this region last saw the bucket
	present bool      // an entry names a holder (not absent or expired)
	holder  string    // the region the entry names
	last    string    // the last region seen holding it, "" if none
	epoch   uint64    // the entry's epoch
	rev     uint64    // the entry's revision
	gone    uint64    // the revision last seen before the key was found gone
	goneAt  time.Time // when this region found it gone
	seen    time.Time // when this region saw the last entry naming a holder, or began watching
	// this region's hold
	held       bool
	heldRev    uint64    // revision of this region's last successful write of the key
	heldEpoch  uint64    // the epoch this region holds it under
	validUntil time.Time // on the monotonic clock: the last renewal's send time plus the lease time
	nextRenew  time.Time
	fence      uint64 // the fence this region wrote in the ride log when it last took the area (kept after a drop: see Fence)
	serving    bool   // fenced and adopted: the region serves the area
	writing    bool   // a take, claim, renewal or move of the key is under way
	preparing  bool   // fencing and adopting are under way
	takenAt    time.Time
	heldFrom   string // the region that held it before this region's hold, "" if none
	from       string // the region that last held it before the current entry's holder
}

// OpenLeases creates or updates the lease bucket (file storage, replicas copies
// placed in distinct regions by the cluster's unique tag) and returns the table of
// region's deployment, not yet watching: set the callbacks, then Open.
func OpenLeases(ctx context.Context, nc *nats.Conn, d *dispatch.Deployment, region string, log *RideLog, replicas int) (*Leases, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	ttl := time.Duration(d.LeaseTTL)
	if ttl <= 0 {
		ttl = dispatch.DefaultLeaseTTL
	}
	kv, err := ensureKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:         LeaseBucket,
		Description:    "One lease per area of the deployment: the region serving it and the lease's fencing epoch.",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       max(1, replicas),
		LimitMarkerTTL: leaseMarkerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("create bucket %s (needs nats-server 2.11 or later): %w", LeaseBucket, err)
	}
	l := &Leases{Deployment: d, Region: region, Log: log, js: js, kv: kv, ttl: ttl,
		serverTTL: time.Duration(math.Ceil(ttl.Seconds())) * time.Second, areas: map[string]*lease{}, alive: map[string]time.Time{}, poke: make(chan struct{}, 1)}
	for _, a := range d.Areas {
		l.areas[a.Name] = &lease{home: a.Region}
	}
	return l, nil
}

// Open starts reading the bucket and holding this region's leases, until Close.
func (l *Leases) Open(ctx context.Context) error {
	if l.Logger == nil {
		l.Logger = slog.New(slog.DiscardHandler)
	}
	run, stop := context.WithCancel(context.Background())
	l.stop, l.done = stop, make(chan struct{})
	go func() {
		defer close(l.done)
		l.run(run)
	}()
	return nil
}

// Close stops renewing (the leases lapse, for a successor to take) and waits.
func (l *Leases) Close() error {
	if l.stop != nil {
		l.stop()
		<-l.done
		l.stop = nil
	}
	return nil
}

// run, every tenth of the lease time, reads every area's key and then renews, takes
// and claims what it should.
//
// It reads with direct gets, which the region's own NATS node answers from its
// replica of the bucket, rather than watching: a watch is a consumer on the bucket's
// leader, and when the leader's region is the one lost, the watch stalls for as long
// as it takes to be made again (seen: a minute), which is just when the successor
// must see the lease lapse. A replica may be a little behind the leader; that only
// delays a take, which a compare-and-set makes safe anyway.
func (l *Leases) run(ctx context.Context) {
	start := time.Now()
	l.mu.Lock()
	for _, a := range l.areas {
		a.seen = start
	}
	l.mu.Unlock()
	tick := time.NewTicker(max(l.ttl/10, 50*time.Millisecond))
	defer tick.Stop()
	var tasks sync.WaitGroup
	defer tasks.Wait()
	for {
		l.read(ctx)
		l.tick(ctx, &tasks)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-l.poke:
		}
	}
}

// read reads every area's key, at once, and takes in what changed.
func (l *Leases) read(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, max(l.ttl/5, 100*time.Millisecond))
	defer cancel()
	var wg sync.WaitGroup
	for name := range l.areas {
		wg.Go(func() {
			e, err := l.kv.Get(ctx, name)
			switch {
			case err == nil:
				l.observe(name, e)
			case errors.Is(err, jetstream.ErrKeyNotFound):
				l.observe(name, nil) // absent, deleted or expired
			}
			// Any other error (no answer, the node hung): keep what was seen.
		})
	}
	wg.Wait()
}

// observe takes in area's entry as read (nil: none, or a delete or expiry marker).
func (l *Leases) observe(area string, e jetstream.KeyValueEntry) {
	l.mu.Lock()
	a := l.areas[area]
	now := time.Now()
	var moved bool
	var to, why string
	switch {
	case e != nil && e.Revision() == a.rev && a.present:
		l.mu.Unlock()
		return // nothing new
	case e != nil:
		var v leaseValue
		if err := json.Unmarshal(e.Value(), &v); err != nil || v.Region == "" {
			l.mu.Unlock()
			l.Logger.Warn("lease entry not understood: ignored", slog.String("area", area), slog.Uint64("revision", e.Revision()))
			return
		}
		if e.Revision() < a.rev || e.Revision() <= a.gone {
			l.mu.Unlock()
			return // a replica behind one read before
		}
		epoch := v.Epoch
		if epoch == 0 {
			epoch = e.Revision()
		}
		moved = a.holder != v.Region
		if a.last != v.Region {
			a.from = a.last
		}
		if now.Sub(l.latestAlive()) > l.ttl/2 {
			l.resumed = now
		}
		l.alive[v.Region] = now
		a.present, a.holder, a.last, a.epoch, a.rev, a.seen = true, v.Region, v.Region, epoch, e.Revision(), now
		if a.held && v.Region != l.Region {
			why = "the bucket names region " + v.Region
			l.drop(a)
		}
		to = v.Region
	case a.present:
		moved = true
		a.present, a.holder, a.gone, a.goneAt = false, "", a.rev, now
		if a.held {
			why = "its key expired in the bucket: renewals did not land in time"
			l.drop(a)
		}
	default:
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	if why != "" {
		l.Logger.Warn("stopped serving an area", slog.String("area", area), slog.String("why", why))
	}
	if moved && to != l.Region && l.Moved != nil {
		go l.Moved(area, to)
	}
}

// drop ends this region's hold of a (l.mu held).
func (l *Leases) drop(a *lease) {
	a.held, a.serving, a.validUntil = false, false, time.Time{}
	l.Metrics.held(l.countHeld())
}

func (l *Leases) countHeld() int {
	n := 0
	for _, a := range l.areas {
		if a.serving {
			n++
		}
	}
	return n
}

// tick does, for each area, what is due: stop serving a lease run out, renew, fence
// and adopt a lease just taken, claim an entry naming this region, take a lapsed one.
func (l *Leases) tick(ctx context.Context, tasks *sync.WaitGroup) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for name, a := range l.areas {
		if a.held && !now.Before(a.validUntil) {
			l.drop(a)
			l.Logger.Warn("stopped serving an area: its lease ran out on this region's clock", slog.String("area", name))
			if l.Moved != nil {
				go l.Moved(name, "")
			}
		}
		start := func(flag *bool, task func(context.Context, string)) {
			*flag = true
			tasks.Add(1)
			go func() {
				defer tasks.Done()
				task(ctx, name)
				l.mu.Lock()
				*flag = false
				l.mu.Unlock()
			}()
		}
		// One write of the key at a time (renew, claim, take, move); fencing and
		// adopting go on beside the renewals, however long they take.
		if !a.writing {
			switch {
			case a.held && !now.Before(a.nextRenew):
				start(&a.writing, l.renew)
			case !a.held && a.present && a.holder == l.Region:
				start(&a.writing, l.claim)
			case !a.held && !a.present && l.eligible(a, now):
				start(&a.writing, l.take)
			}
		}
		if a.held && !a.serving && !a.preparing {
			start(&a.preparing, l.prepare)
		}
	}
}

// eligible says whether this region may try to take a, absent or expired, now.
func (l *Leases) eligible(a *lease, now time.Time) bool {
	first, wait := a.last, l.ttl+leaseMargin
	if first == "" {
		first, wait = a.home, 2*l.ttl+leaseMargin // never held: the home first, by far
	}
	chain := []string{first}
	for _, r := range l.Deployment.Successors(first) {
		chain = append(chain, r.Name)
	}
	k := slices.Index(chain, l.Region)
	switch {
	case k < 0:
		return false
	case k == 0:
		return true
	case now.Sub(a.seen) < wait+time.Duration(k-1)*l.ttl:
		return false
	case now.Sub(a.goneAt) < leasePrecedence:
		// The region that held it, if it is alive, sees the key gone as soon and
		// takes it back at once (a NATS election that outlasted its renewals).
		return false
	}
	// A region ahead in the chain that is alive (it renews a lease of its own) takes
	// the area itself, even if an election in the bucket holds it up a while. Alive is
	// judged against the bucket's own activity, not the clock: while the bucket has
	// no leader nobody renews, and a region ahead is not counted dead for that. Once
	// the bucket is back, every region ahead gets a lease time to write again (its
	// requests sent during the election may never be answered, so it can be a second
	// or two behind this one) before it is judged.
	if k > 1 && now.Sub(l.resumed) <= l.ttl+leaseMargin {
		return false
	}
	latest := l.latestAlive()
	for _, r := range chain[1:k] {
		if latest.Sub(l.alive[r]) <= l.ttl+leaseMargin {
			return false
		}
	}
	return true
}

// latestAlive is when this region last saw any region write a lease entry (l.mu held).
func (l *Leases) latestAlive() time.Time {
	var latest time.Time
	for _, t := range l.alive {
		if t.After(latest) {
			latest = t
		}
	}
	return latest
}

// keySubject is the subject of area's key in the bucket.
func keySubject(area string) string { return "$KV." + LeaseBucket + "." + area }

// put writes this region's entry for area over revision rev with the keys' TTL, and
// returns its revision; a revision that moved on is jetstream.ErrKeyRevisionMismatch.
func (l *Leases) put(ctx context.Context, area string, v leaseValue, rev uint64) (uint64, error) {
	body, _ := json.Marshal(v) // a string and a number always encode
	ctx, cancel := context.WithTimeout(ctx, l.ttl/2)
	defer cancel()
	ack, err := l.js.Publish(ctx, keySubject(area), body,
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(l.serverTTL))
	if isWrongLastSequence(err) {
		return 0, jetstream.ErrKeyRevisionMismatch
	}
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// renew renews this region's lease of area: one renewal in flight per key.
func (l *Leases) renew(ctx context.Context, area string) {
	l.mu.Lock()
	a := l.areas[area]
	rev, epoch := a.heldRev, a.heldEpoch
	l.mu.Unlock()
	sent := time.Now()
	next, err := l.put(ctx, area, leaseValue{Region: l.Region, Epoch: epoch}, rev)
	l.Metrics.renewed(time.Since(sent), err)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !a.held || a.heldEpoch != epoch || a.heldRev != rev {
		return // dropped meanwhile
	}
	switch {
	case err == nil:
		a.heldRev, a.validUntil, a.nextRenew = next, sent.Add(l.ttl), sent.Add(l.ttl/3)
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		// Someone wrote the key, or it expired; or an earlier renewal that timed out
		// was stored after all, in which case the bucket names this region under its
		// epoch at a newer revision: go on from there (the lease stays counted from
		// the last renewal known to have landed).
		if a.present && a.holder == l.Region && a.epoch == epoch && a.rev > rev {
			a.heldRev, a.nextRenew = a.rev, time.Time{}
			return
		}
		l.drop(a)
		l.Logger.Warn("stopped serving an area: the lease's revision moved on", slog.String("area", area))
		if l.Moved != nil {
			go l.Moved(area, "")
		}
	default:
		a.nextRenew = time.Now().Add(l.ttl / 10)
		if ctx.Err() == nil {
			l.Logger.Warn("lease renewal failed: retrying", slog.String("area", area),
				slog.Duration("left", time.Until(a.validUntil)), slog.Any("err", err))
		}
	}
}

// take tries to take area's absent or expired key.
func (l *Leases) take(ctx context.Context, area string) {
	l.mu.Lock()
	from := l.areas[area].last
	l.mu.Unlock()
	body, _ := json.Marshal(leaseValue{Region: l.Region})
	cctx, cancel := context.WithTimeout(ctx, l.ttl/2)
	defer cancel()
	sent := time.Now()
	rev, err := l.kv.Create(cctx, area, body, jetstream.KeyTTL(l.serverTTL))
	if err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
			l.Logger.Info("could not take a lease yet", slog.String("area", area), slog.Any("err", err))
		}
		return
	}
	l.hold(area, rev, rev, sent, from)
}

// claim takes over an entry that names this region but that it does not hold (a
// move to this region, or a lease of its previous run) by a compare-and-set on it.
func (l *Leases) claim(ctx context.Context, area string) {
	l.mu.Lock()
	a := l.areas[area]
	rev, epoch, from := a.rev, a.epoch, a.from
	l.mu.Unlock()
	sent := time.Now()
	next, err := l.put(ctx, area, leaseValue{Region: l.Region, Epoch: epoch}, rev)
	if err != nil {
		if ctx.Err() == nil {
			l.Logger.Info("could not claim a lease naming this region", slog.String("area", area), slog.Any("err", err))
		}
		return
	}
	l.hold(area, next, epoch, sent, from)
}

// hold records that this region holds area's lease since sent, at rev, under epoch,
// taken from region from ("" if nobody held it before).
func (l *Leases) hold(area string, rev, epoch uint64, sent time.Time, from string) {
	l.mu.Lock()
	a := l.areas[area]
	a.held, a.serving, a.heldRev, a.heldEpoch, a.heldFrom = true, false, rev, epoch, from
	a.validUntil, a.nextRenew, a.takenAt = sent.Add(l.ttl), sent.Add(l.ttl/3), sent
	l.mu.Unlock()
	select { // fence and adopt at once
	case l.poke <- struct{}{}:
	default:
	}
	l.Logger.Info("took an area's lease", slog.String("area", area), slog.Uint64("epoch", epoch),
		slog.String("from", from))
}

// prepare writes area's fence and adopts its rides; then this region serves it.
func (l *Leases) prepare(ctx context.Context, area string) {
	l.mu.Lock()
	a := l.areas[area]
	epoch, from := a.heldEpoch, a.heldFrom
	l.mu.Unlock()
	// Bounded well below the lease: a read stuck in a NATS election is tried again.
	cctx, cancel := context.WithTimeout(ctx, 2*l.ttl)
	defer cancel()
	fence, err := l.Log.WriteFence(cctx, area, l.Region, epoch)
	if err != nil {
		l.Logger.Warn("could not fence an area just taken: retrying", slog.String("area", area), slog.Any("err", err))
		return
	}
	l.mu.Lock()
	ok := a.held && a.heldEpoch == epoch
	if ok {
		a.fence = fence // adopt's own writes need none; the engine's need it at once after
	}
	l.mu.Unlock()
	if !ok {
		return
	}
	n := 0
	if l.Adopt != nil {
		if n, err = l.Adopt(cctx, area); err != nil {
			l.Logger.Warn("could not adopt an area's rides: retrying", slog.String("area", area), slog.Any("err", err))
			return
		}
	}
	l.mu.Lock()
	if a.held && a.heldEpoch == epoch {
		a.serving = true
		took := time.Since(a.takenAt)
		l.Metrics.held(l.countHeld())
		if from != "" && from != l.Region {
			l.Metrics.tookOver()
		}
		l.mu.Unlock()
		l.Logger.Info("serving an area", slog.String("area", area), slog.Uint64("epoch", epoch), slog.String("from", from),
			slog.Int("rides_adopted", n), slog.String("since_taken", took.Round(time.Millisecond).String()))
		return
	}
	l.mu.Unlock()
}

// ServedBy implements dispatch.Serving: this region for an area it serves now (its
// lease valid on its own clock); else the region the bucket names, as last seen; ""
// while nobody holds it, or while this region holds it without serving yet.
func (l *Leases) ServedBy(area string) (string, uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.areas[area]
	if !ok {
		return "", 0, false
	}
	switch {
	case a.held && a.serving && time.Now().Before(a.validUntil):
		return l.Region, a.heldEpoch, true
	case a.present && a.holder != l.Region:
		return a.holder, a.epoch, true
	}
	return "", 0, true
}

// Taking implements dispatch.Serving: whether this region holds an area's lease it
// does not serve yet (fencing it, adopting its rides).
func (l *Leases) Taking() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.areas {
		if a.held && !a.serving {
			return true
		}
	}
	return false
}

// Fence implements Fences: the fence this region wrote when it last took area,
// whether or not its lease is still valid on its clock. The clock decides whether the
// region assigns (ServedBy); the log alone decides whether its writes land, so a
// region whose lease ran out while nobody took the area can still finish the trips it
// has, and one that lost the area to another region is refused, however sure its
// clock is.
func (l *Leases) Fence(area string) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, ok := l.areas[area]
	if !ok || a.fence == 0 {
		return 0, false
	}
	return a.fence, true
}

// ErrNotHolder: a move asked of a region that does not hold the area; Holder is the
// region that does, "" if none.
type ErrNotHolder struct{ Holder string }

func (e *ErrNotHolder) Error() string {
	if e.Holder == "" {
		return "nobody holds the area's lease right now"
	}
	return "region " + e.Holder + " holds the area's lease"
}

// Move hands area to region to: this region, holding it, stops serving it first and
// then writes the entry naming to (over its own revision), which to claims; no
// moment has two regions serving it. A region that does not hold the area returns
// *ErrNotHolder (the caller asks the holder). Moving an area to its holder does
// nothing.
func (l *Leases) Move(ctx context.Context, area, to string) (epoch uint64, err error) {
	if _, ok := l.Deployment.Region(to); !ok {
		return 0, dispatch.Errorf(dispatch.ECodeInvalid, "no region %q in this deployment", to)
	}
	l.mu.Lock()
	a, ok := l.areas[area]
	if !ok {
		l.mu.Unlock()
		return 0, dispatch.Errorf(dispatch.ECodeNotFound, "no area %q in this deployment", area)
	}
	if !a.held || !time.Now().Before(a.validUntil) {
		holder := ""
		if a.present {
			holder = a.holder
		}
		l.mu.Unlock()
		return 0, &ErrNotHolder{Holder: holder}
	}
	if to == l.Region {
		epoch := a.heldEpoch
		l.mu.Unlock()
		return epoch, nil
	}
	for a.writing { // let a renewal in flight land first: one write per key at a time
		l.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		l.mu.Lock()
	}
	rev := a.heldRev
	l.drop(a)
	a.writing = true
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		a.writing = false
		l.mu.Unlock()
	}()
	l.Logger.Info("moving an area: stopped serving it", slog.String("area", area), slog.String("to", to))
	next, err := l.put(ctx, area, leaseValue{Region: to}, rev)
	if err != nil {
		return 0, fmt.Errorf("move area %s to %s: %w", area, to, err)
	}
	if l.Moved != nil {
		go l.Moved(area, to)
	}
	return next, nil
}

// LeaseMetrics are the lease table's Prometheus-style figures, counted by whatever
// registry the caller chose (see NewLeaseMetrics in serve).
type LeaseMetrics struct {
	Held     func(n int)                    // areas this region serves now
	Renewed  func(d time.Duration, ok bool) // one renewal's round trip
	TookOver func()                         // an area taken from another region
}

func (m *LeaseMetrics) held(n int) {
	if m != nil && m.Held != nil {
		m.Held(n)
	}
}

func (m *LeaseMetrics) renewed(d time.Duration, err error) {
	if m != nil && m.Renewed != nil {
		m.Renewed(d, err == nil)
	}
}

func (m *LeaseMetrics) tookOver() {
	if m != nil && m.TookOver != nil {
		m.TookOver()
	}
}
